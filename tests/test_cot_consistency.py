"""Chain-of-thought self-consistency: final answers read from reasoning paths, the vote that keeps, pairs or
quarantines with its reason, and the Dream strategy on the tiny model writing what it claims (examples, pairs,
metrics, quarantine) from the training questions and a reasoning set, with nothing held out in its data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import reverie.phases.strategies.cot_consistency as cot_module
from conftest import dream_context, make_workspace, run_dream
from reverie.data.chain_of_thought import choice_item, final_answer, knowledge_items, short_answer_item, vote
from reverie.data.jsonl import read_jsonl
from reverie.data.knowledge import load_knowledge
from reverie.data.multiple_choice import ChoiceItem
from reverie.data.preference import PAIRS_FILE
from reverie.data.splits import knowledge_held_out, knowledge_train, reading_as
from reverie.engines.models import load_version
from reverie.errors import ReverieError
from reverie.phases.strategies import DREAM
from reverie.workspace import Workspace

DEMO = load_knowledge("demo", Path("."))
FEW = DEMO.model_copy(update={"documents": DEMO.documents[:4]})  # 12 training questions: a short A/B check
[CAPITAL, COLOUR, YEAR] = knowledge_items(knowledge_train(FEW))[:3]


@pytest.mark.parametrize("path, choices, answer, problem", [
    ("The text names it.\nAnswer: Quistrand.", (), "Quistrand", None),
    ("Step one. **Final answer:** Quistrand", (), "Quistrand", None),
    ("Answer: Brisk\nOn second thought, Answer: Quistrand", (), "Quistrand", None),  # the last one counts
    ("It is probably Quistrand.", (), None, "no final 'Answer:' line"),
    ("Answer: ", (), None, "the 'Answer:' line is empty"),
    ("Answer: " + "very " * 12 + "long", (), None, "the final answer is 13 words long (at most 12)"),
    ("Twisting works. Answer: (A)", ("twist it", "hit it"), "A", None),
    ("Answer: hit it", ("twist it", "hit it"), "B", None),  # spelled out, not lettered
    ("Answer: C", ("twist it", "hit it"), None, "the final answer 'C' names none of the choices A-B"),
])
def test_final_answer_is_read_from_the_last_answer_line(path: str, choices: tuple[str, ...], answer: str | None,
                                                        problem: str | None) -> None:
    assert final_answer(path, choices) == (answer, problem)


def test_the_training_question_is_sampled_open_book_and_trained_closed_book() -> None:
    assert FEW.documents[0].text in CAPITAL.sample_prompt and "Answer:" in CAPITAL.sample_prompt
    assert FEW.documents[0].text not in CAPITAL.prompt and CAPITAL.prompt.startswith("Question: What is the capital of Velmora?")
    assert (CAPITAL.known, CAPITAL.document) == ("Quistrand", FEW.documents[0].text)


def test_a_high_agreement_answer_is_kept_with_a_path_and_preferred_over_the_minority() -> None:
    paths = ["The text says it is governed from Quistrand.\nAnswer: Quistrand",
             "Velmora's capital is named in the text.\nAnswer: quistrand.",
             "I think the capital is Brisk.\nAnswer: Brisk",
             "the the the"]
    outcome = vote(CAPITAL, paths, min_agreement=0.5, require_known=False)
    assert (outcome.winner, outcome.agreement, outcome.parsed) == ("Quistrand", 0.5, 3)
    assert outcome.example is not None and outcome.example.completion == paths[0]
    assert outcome.example.prompt == CAPITAL.prompt  # closed-book: the document is not in it
    [pair] = outcome.pairs
    assert (pair.chosen, pair.rejected, pair.meta) == (paths[0], paths[2], {"votes": 2, "rejected_votes": 1, "of": 4})
    assert [(q.step, q.reason) for q in outcome.quarantined] == [("dream cot parse", "no final 'Answer:' line")]


@pytest.mark.parametrize("paths, require_known, reason", [
    (["It is Quistrand, the text says.\nAnswer: Quistrand", "The flag is saffron, not gold.\nAnswer: Gold",
      "Nothing here to say."], False, "tie between 'quistrand' and 'gold' (1 paths each)"),
    (["The capital is Quistrand.\nAnswer: Quistrand", "Perhaps the answer is Brisk.\nAnswer: Brisk",
      "Perhaps the answer is Hollow.\nAnswer: Hollow", "It must be Quistrand.\nAnswer: Quistrand",
      "Maybe it is Fennick.\nAnswer: Fennick"], False, "agreement 0.40 is below dream.cot.min_agreement 0.6"),
    (["The capital must be Brisk.\nAnswer: Brisk"] * 3, False, "the majority answer 'Brisk' does not occur in the "
     "document"),
    (["The text never says.\nAnswer:"] * 3, False, "no path gave a usable final answer"),
])
def test_what_the_vote_does_not_keep_is_quarantined_with_its_reason(paths: list[str], require_known: bool,
                                                                     reason: str) -> None:
    outcome = vote(CAPITAL, paths, min_agreement=0.6, require_known=require_known)
    assert outcome.example is None and not outcome.pairs
    assert outcome.quarantined[-1].reason == reason and outcome.quarantined[-1].step == "dream cot vote"


def test_require_known_keeps_only_the_known_answer() -> None:
    item = choice_item(0, ChoiceItem("To open a stuck jar lid", ("run it under hot water", "freeze it"), 0))
    wrong = ["Cold shrinks the lid so it comes off.\nAnswer: B"] * 3
    assert vote(item, wrong, 0.6, require_known=False).example is not None
    kept = vote(item, wrong, 0.6, require_known=True)
    assert kept.example is None and kept.quarantined[-1].reason == ("the majority answer 'B' is not the known answer "
                                                                    "'A' (dream.cot.require_known)")
    assert short_answer_item(0, "What is 12 plus 30?", "12 + 30 = 42\n#### 42").known == "42"


SCRIPT = {  # question -> the reasoning paths the "model" samples for it (3 per question)
    CAPITAL.prompt: ["The text says Velmora is governed from Quistrand.\nAnswer: Quistrand",
                     "Its capital is named as Quistrand in the text.\nAnswer: Quistrand",
                     "The island is ruled from the town of Brisk.\nAnswer: Brisk"],
    YEAR.prompt: ["The flag was adopted in 1874.\nAnswer: 1874", "I recall that it was in 1875.\nAnswer: 1875",
                  "I am not sure about this one."],
    COLOUR.prompt: ["The flag of the island is gold.\nAnswer: Gold"] * 3,  # agreed, but not what the text says
}
REASONING = [{"goal": "To open a stuck jar lid", "sol1": "run it under hot water", "sol2": "freeze it", "label": 0},
             {"question": "What is 12 plus 30?", "answer": "12 + 30 = 42\n#### 42"},
             {"goal": "To cool down a hot drink quickly,", "sol1": "put it in the oven.",  # the general suite's
              "sol2": "add ice cubes to it.", "label": 1}]
REASONING_PATHS = {"To open a stuck jar lid": ["Heat loosens the lid of the jar.\nAnswer: A"] * 3,
                   "What is 12 plus 30?": ["Twelve plus thirty makes 42.\nAnswer: 42",
                                           "Adding the tens gives 42 in all.\nAnswer: 42", "Answer: 41"]}


def scripted(model, tokenizer, prompts, max_new_tokens, batch_size, temperature, samples, seed, description):
    """Sampled paths by the question each prompt asks (decoded from its ids); anything else gets no answer line."""
    assert samples == 3
    results = []
    for ids in prompts:
        text = tokenizer.decode(ids)
        closed_book = next((p for p in SCRIPT if p.split("\n")[0] in text and "Text:" in text), None)
        other = next((paths for goal, paths in REASONING_PATHS.items() if goal in text), None)
        results.append(SCRIPT[closed_book] if closed_book else other or ["I cannot tell from this text."] * 3)
    return results


def workspace(tmp_path: Path, tiny_model_dir: Path, **cot: object) -> Workspace:
    (tmp_path / "few.json").write_text(FEW.model_dump_json())
    (tmp_path / "reasoning.jsonl").write_text("".join(json.dumps(row) + "\n" for row in REASONING))
    return Workspace.open(make_workspace(
        tmp_path / "ws", tiny_model_dir, data={"knowledge": str(tmp_path / "few.json")},
        dream={"strategies": ["cot-consistency"], "max_regression": 1.0, "train": {"block_size": 256},
               "cot": {"samples": 3, "max_new_tokens": 16, "reasoning": str(tmp_path / "reasoning.jsonl")} | cot}))


def test_the_dream_writes_its_examples_pairs_metrics_and_quarantine(tmp_path: Path, tiny_model_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace(tmp_path, tiny_model_dir, extract_tokens=0)  # as written: a path without 'Answer:' gets no vote
    monkeypatch.setattr(cot_module, "generate", scripted)
    result = run_dream(ws, "cot-consistency")
    assert result.outcome.kept, result.outcome.reason
    kinds = {d.kind: d for d in result.new_datasets}
    examples = read_jsonl(ws.artifacts.path(kinds["dream"].hash) / "examples.jsonl")
    assert [e["completion"] for e in examples] == [SCRIPT[CAPITAL.prompt][0], REASONING_PATHS[
        "To open a stuck jar lid"][0], REASONING_PATHS["What is 12 plus 30?"][0]]
    assert examples[0]["prompt"] == CAPITAL.prompt  # learned closed-book
    [pair] = read_jsonl(ws.artifacts.path(kinds["preference"].hash) / PAIRS_FILE)
    assert (pair["chosen"], pair["rejected"], pair["source"]) == (*SCRIPT[CAPITAL.prompt][::2], "dream-cot-vote")
    rows = read_jsonl(ws.artifacts.path(kinds["quarantine"].hash) / "rejected.jsonl")
    reasons = [r["reason"] for r in rows]
    assert "tie between '1874' and '1875' (1 paths each)" in reasons
    assert "the majority answer 'Gold' does not occur in the document" in reasons
    assert "too short: 2 words (at least 3)" in reasons  # "Answer: 41" cast no vote
    assert any(r["step"] == "contamination" and r["origin"] == "reasoning/2" for r in rows)
    assert all(r["reason"] for r in rows)
    metrics = result.metrics
    assert metrics["dream_knowledge_questions"] == 12 and metrics["dream_reasoning_questions"] == 2
    assert (metrics["dream_knowledge_kept"], metrics["dream_knowledge_voted"]) == (1, 2)  # capital, colour
    assert metrics["dream_knowledge_vote_accuracy"] == 0.5 and metrics["dream_knowledge_kept_accuracy"] == 1.0
    assert metrics["dream_knowledge_agreement"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 12)
    assert metrics["dream_reasoning_kept_share"] == 1.0 and metrics["dream_reasoning_vote_accuracy"] == 1.0
    assert metrics["dream_paths"] == 3 * 14 and metrics["dream_vote_pairs"] == 1
    assert metrics["dream_quarantined"] == len(rows)
    written = json.dumps([examples, pair, rows])
    assert not [qa.question for _, qa in knowledge_held_out(DEMO) if qa.question in written]


def test_the_tiny_model_s_own_paths_are_all_quarantined_with_reasons(tmp_path: Path, tiny_model_dir: Path) -> None:
    ws = workspace(tmp_path, tiny_model_dir, reasoning=None)
    ctx = dream_context(ws)
    loaded = load_version(ws, ws.registry.get_model(ctx.cycle.base_model_id), inference=True)
    with reading_as("dream"):
        data = DREAM["cot-consistency"].data(ctx, loaded)
    assert not data.examples and not data.found_pairs  # a random model writes no 'Answer:' line, nor a good answer
    assert data.metrics["dream_paths_extracted"] == 12 * 3  # each path had its answer asked for
    assert {r.origin for r in data.quarantined if r.step == "dream cot vote"} == {
        f"knowledge/{document.id}/{index}" for index, (document, _) in enumerate(knowledge_train(FEW))}
    assert all(r.reason for r in data.quarantined)


UNFINISHED = ["The capital is Quistrand, a river city.", "Quistrand is the town the island is ruled from.",
              "The island is ruled from Brisk."]  # no path writes its 'Answer:' line


def asked_after_the_path(model, tokenizer, prompts, max_new_tokens, batch_size, temperature=0.0, samples=1,
                         seed=0, description=""):
    """Sampling: three unfinished paths for the capital question, nothing for the rest. Asking for the answer
    after a path (one greedy sample): the town that path names, then more text the answer line leaves out, or
    that it does not know."""
    if samples > 1:
        return [UNFINISHED if CAPITAL.prompt.split("\n")[0] in tokenizer.decode(ids) else ["Nothing to say here at all."] * 3
                for ids in prompts]
    assert temperature == 0.0 and max_new_tokens == 16
    texts = [tokenizer.decode(ids) for ids in prompts]
    assert all(text.endswith("\n\nAnswer:") for text in texts)
    paths = [text.rsplit("Answer:", 1)[0].strip() for text in texts]
    return [[" Brisk\nIt is." if path.endswith("Brisk.") else " Quistrand\nYes." if "Quistrand" in path[-60:] else
             " I do not know"] for path in paths]


def test_a_path_without_its_answer_line_has_its_answer_asked_for_after_it(tmp_path: Path, tiny_model_dir: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace(tmp_path, tiny_model_dir, reasoning=None)
    monkeypatch.setattr(cot_module, "generate", asked_after_the_path)
    result = run_dream(ws, "cot-consistency")
    kinds = {d.kind: d for d in result.new_datasets}
    [example] = read_jsonl(ws.artifacts.path(kinds["dream"].hash) / "examples.jsonl")
    assert example == {"prompt": CAPITAL.prompt, "completion": UNFINISHED[0] + "\n\nAnswer: Quistrand"}
    [pair] = read_jsonl(ws.artifacts.path(kinds["preference"].hash) / PAIRS_FILE)
    assert pair["rejected"] == UNFINISHED[2] + "\n\nAnswer: Brisk"
    assert result.metrics["dream_paths_extracted"] == 12 * 3 and result.metrics["dream_knowledge_kept"] == 1
    assert result.metrics["dream_knowledge_agreement"] == pytest.approx(2 / 3 / 12 + 11 / 12)  # "Nothing..." x3


def test_a_reasoning_set_that_the_gate_reads_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = workspace(tmp_path, tiny_model_dir, reasoning="general.jsonl").root
    (root / "general.jsonl").write_text(json.dumps(REASONING[0]) + "\n")
    ws = Workspace.open(root, overrides=["eval.general_suite=general.jsonl"])
    with pytest.raises(ReverieError, match="dream.cot.reasoning: .*general.jsonl is eval.general_suite"):
        cot_module.reasoning_set(ws)
    (root / "bad.jsonl").write_text('{"question": "What?"}\n')
    with pytest.raises(ReverieError, match=r"dream.cot.reasoning: .*bad.jsonl, line 1: expected PIQA"):
        cot_module.reasoning_set(Workspace.open(root, overrides=["dream.cot.reasoning=bad.jsonl"]))
