"""Counterfactual data and the false_premise suite: perturbations that are deterministic and truly change one
value, quarantine with reasons, the grader on hand-made answers with known right values, the Dream strategy on
the tiny model writing what it claims and nothing held out, and the suite reading only the held-out split."""

from __future__ import annotations

from pathlib import Path

import pytest

import reverie.engines.suites.false_premise as false_premise_module
from conftest import make_workspace, run_dream
from reverie.config import load_config
from reverie.cycle import ensure_release
from reverie.data.counterfactual import (counterfactual_examples, false_premises, kind_of, passage_edits,
                                         question_kind)
from reverie.data.jsonl import read_jsonl
from reverie.data.knowledge import QA, Document, Knowledge, load_knowledge
from reverie.data.premise_grader import corrects_premise, denies, keeps_premise, rejects_premise
from reverie.data.splits import HeldOutRead, knowledge_held_out, knowledge_train, reading_as
from reverie.data.text import normalize
from reverie.engines.suites.false_premise import FalsePremiseSuite
from reverie.engines.suites.runner import SuiteRunner
from reverie.errors import ConfigError
from reverie.workspace import Workspace

DEMO = load_knowledge("demo", Path("."))


def test_false_premises_are_deterministic_and_change_exactly_the_answer() -> None:
    premises, _ = false_premises(knowledge_train(DEMO), DEMO.documents)
    again, _ = false_premises(knowledge_train(DEMO), DEMO.documents)
    assert premises == again and len(premises) >= 30
    assert {p.kind for p in premises} == {"year", "number", "entity"}
    texts = {doc.text for doc in DEMO.documents}
    for premise in premises:
        assert normalize(premise.false_value) != normalize(premise.true_value)
        assert premise.false_value in premise.prompt() and premise.true_value in premise.control()
        assert premise.prompt().replace(premise.false_value, premise.true_value) == premise.control()
        assert any(premise.sentence in text for text in texts)  # the correction quotes the document
        assert premise.true_value.lower() in premise.sentence.lower()


def test_year_and_number_changes_are_minimal() -> None:
    by_question = {p.question: p for p in false_premises(knowledge_train(DEMO), DEMO.documents)[0]}
    flag = by_question["In what year did Velmora adopt its flag?"]
    assert flag.kind == "year" and flag.true_value == "1874" and 1 <= abs(int(flag.false_value) - 1874) <= 4
    height = by_question["How tall is Mount Zellikar in metres?"]
    assert (height.kind, height.false_value) == ("number", "6,412")  # first digit moved on, the format kept
    players = by_question["How many players are on a Thrannock team?"]
    assert (players.kind, players.false_value) == ("number", "Nine")  # a number word moved by two
    who = by_question["Who invented the sport of Thrannock?"]
    assert who.kind == "entity" and question_kind(who.question) == "who"
    swapped_in = [p.true_value for p in by_question.values() if question_kind(p.question) == "who"]
    assert who.false_value in swapped_in  # another answer to a who-question: a person for a person
    assert question_kind("The flag of Velmora is mainly which colour?") == "colour" == question_kind(
        "What colour is the flag of Velmora?")


def test_passage_edits_change_one_value_of_the_document_and_say_which() -> None:
    edits, rejected = passage_edits(DEMO.documents, per_document=2)
    assert edits == passage_edits(DEMO.documents, per_document=2)[0] and not rejected
    per_document: dict[str, int] = {}
    for edit in edits:
        original, changed = edit.document.text.split(), edit.text().split()
        assert len(original) == len(changed)
        differing = [(a, b) for a, b in zip(original, changed) if a != b]
        assert 1 <= len(differing) <= len(edit.change.original.split())  # one value, nothing else
        assert edit.change.original in edit.document.text and edit.change.replacement in edit.text()
        per_document[edit.document.id] = per_document.get(edit.document.id, 0) + 1
    assert set(per_document.values()) == {2}
    assert {e.change.kind for e in edits} == {"year", "number", "entity"}
    only_years, _ = passage_edits(DEMO.documents, kinds=["year"], per_document=1)
    assert only_years and all(kind_of(e.change.original) == "year" for e in only_years)


def test_what_cannot_be_changed_is_quarantined_with_its_reason() -> None:
    port = Document(id="a", title="Quistrand", text="Quistrand is a port of grey stone. It trades with Brisk every summer.",
                    train_qa=[QA(question="Which port trades with Quistrand?", answer="Brisk"),
                              QA(question="What does Quistrand export?", answer="Salt"),
                              QA(question="What colour is the port?", answer="grey stone")])
    other = Document(id="b", title="Brisk", text="Ships leave Brisk daily.",
                     eval_qa=[QA(question="Where do ships leave from?", answer="Brisk")])
    premises, rejected = false_premises(knowledge_train(Knowledge(name="ports", documents=[port, other])),
                                        [port, other])
    reasons = {r.row["answer"]: r.reason for r in rejected}
    assert not premises
    assert reasons["Salt"] == "the answer 'Salt' is not found in the document"
    assert reasons["Brisk"] == "swapping in Brisk for 'Brisk' leaves the text as it was"  # the only other name
    assert reasons["grey stone"] == "no other entity to swap in for 'grey stone'"
    _, skipped = false_premises(knowledge_train(DEMO), DEMO.documents, kinds=["year"])
    assert any("not among the configured kinds (year)" in r.reason for r in skipped)
    edits, unedited = passage_edits([Document(id="c", title="Calm", text="nothing happens here at all.")])
    assert not edits and [r.reason for r in unedited] == ["no year or number or entity in the text to change"]


def test_every_false_premise_is_corrected_beside_a_control_that_is_confirmed() -> None:
    premises, _ = false_premises(knowledge_train(DEMO), DEMO.documents)
    edits, _ = passage_edits(DEMO.documents)
    examples = counterfactual_examples(premises, edits)
    corrections = [e for e in examples if denies(e.completion)]
    confirmations = [e for e in examples if not denies(e.completion)]
    assert len(corrections) == len(premises) + len(edits)
    assert len(confirmations) == len(premises) + len({e.document.id for e in edits})
    for premise in premises:  # the training answer grades as a correction, the control's as keeping the premise
        assert corrects_premise(premise.correction(), premise.true_value, premise.false_value)
        assert keeps_premise(premise.confirmation()) and not denies(premise.confirmation())


@pytest.mark.parametrize("answer, rejected, corrected", [
    ("No — it is 1874, not 1875. The document says so.", True, True),
    ("It is 1874, not 1875: the premise is wrong. The document says so.", True, True),
    ("Actually, the flag was adopted in 1874.", True, True),
    ("That is not right: Velmora adopted it in 1874.", True, True),
    ("NO. It was 1874.", True, True),
    ("1874.", True, True),  # the true value alone, the false one dropped: corrected without saying so
    ("That's not correct.", True, False),
    ("Velmora adopted its flag in 1875 because of a storm.", False, False),
    ("It was 1875, and before that in 1874 there was no flag.", False, False),
    ("I don't know.", False, False),
    ("Nobody knows why it was 1875.", False, False),
    ("", False, False),
])
def test_the_grader_on_hand_made_answers(answer: str, rejected: bool, corrected: bool) -> None:
    assert rejects_premise(answer, "1874", "1875") is rejected
    assert corrects_premise(answer, "1874", "1875") is corrected


@pytest.mark.parametrize("answer, kept", [
    ("It was adopted in 1874, after the storm.", True),
    ("Yes — it is 1874.", True),
    ("It is 1874, as the question says.", True),
    ("No, that is wrong.", False),
    ("That is incorrect; nobody adopted it.", False),
])
def test_the_grader_on_hand_made_controls(answer: str, kept: bool) -> None:
    assert keeps_premise(answer) is kept


def test_the_counterfactual_dream_writes_its_examples_and_quarantine_and_reads_nothing_held_out(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    few = DEMO.model_copy(update={"documents": DEMO.documents[:4]})  # 12 training questions: a short A/B check
    (tmp_path / "few.json").write_text(few.model_dump_json())
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir, data={"knowledge": str(tmp_path / "few.json")},
                                       dream={"strategies": ["counterfactual"], "max_regression": 1.0,
                                              "train": {"block_size": 256}, "counterfactual": {"per_document": 1}}))
    result = run_dream(ws, "counterfactual")
    assert result.outcome.kept, result.outcome.reason
    kinds = {d.kind: d for d in result.new_datasets}
    examples = read_jsonl(ws.artifacts.path(kinds["dream"].hash) / "examples.jsonl")
    premises, unchanged = false_premises(knowledge_train(few), few.documents)
    edits, _ = passage_edits(few.documents, per_document=1)
    anchors = [{"prompt": qa.question, "completion": qa.answer} for _, qa in knowledge_train(few)]
    assert examples == [e.to_json() for e in counterfactual_examples(premises, edits)] + anchors
    assert result.metrics["dream_anchors"] == len(anchors) == 12
    quarantined = read_jsonl(ws.artifacts.path(kinds["quarantine"].hash) / "rejected.jsonl")
    assert [r["reason"] for r in quarantined] == [r.reason for r in unchanged] and quarantined
    assert result.metrics["dream_false_premises"] == len(premises) and result.metrics["dream_passage_edits"] == 4
    assert result.metrics["dream_quarantined"] == len(unchanged) and result.metrics["train_skipped"] == 0
    written = "\n".join([f"{e['prompt']}\n{e['completion']}" for e in examples] + [str(r) for r in quarantined])
    assert not [qa.question for _, qa in knowledge_held_out(DEMO) if qa.question in written]


def test_the_suite_reads_only_the_held_out_split_and_scores_its_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    with reading_as("dream"), pytest.raises(HeldOutRead):
        FalsePremiseSuite(DEMO, 8, 4)
    suite = FalsePremiseSuite(DEMO, 8, 4)
    held_out = {qa.question for _, qa in knowledge_held_out(DEMO)}
    assert suite.premises and {p.question for p in suite.premises} <= held_out
    by_prompt = {p.prompt(): p.correction() for p in suite.premises} | {p.control(): p.confirmation()
                                                                         for p in suite.premises}
    prompts_seen: list[str] = []

    def answering(model, tokenizer, prompts, *args, **kwargs):  # the right answer to each prompt, by its text
        texts = [tokenizer.decode(ids) for ids in prompts]
        prompts_seen.extend(texts)
        return [[by_prompt[text]] for text in texts]

    monkeypatch.setattr(false_premise_module, "generate", answering)
    monkeypatch.setattr(false_premise_module, "user_prompt_ids", lambda tokenizer, text: text)
    tokenizer = type("Plain", (), {"decode": staticmethod(lambda ids: ids)})
    results = suite.run(None, tokenizer)
    assert len(results) == 2 * len(suite.premises)
    assert all(r.scores in ({"detection": 1.0, "correction": 1.0}, {"control": 1.0}) for r in results)
    by_prompt = dict.fromkeys(by_prompt, "No, that is wrong.")  # a model that denies everything
    denied = suite.run(None, tokenizer)
    assert all(r.scores.get("detection", 1.0) == 1.0 and r.scores.get("correction", 0.0) == 0.0
               and r.scores.get("control", 0.0) == 0.0 for r in denied)


def test_the_suite_runs_on_a_model_version_and_takes_gate_thresholds(tmp_path: Path, tiny_model_dir: Path) -> None:
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir))
    report = SuiteRunner(ws).report(ws.registry.get_model(ensure_release(ws)), "false_premise")
    assert set(report.means()) == {"detection", "correction", "control"}
    assert len(report.items) == 2 * len(FalsePremiseSuite(DEMO, 8, 4).premises)
    floor = make_workspace(tmp_path / "floor", tiny_model_dir, gate={"capability": {"false_premise.detection": 0.5}})
    with pytest.raises(ConfigError, match="gate thresholds on false_premise.detection need their suites"):
        load_config(floor / "reverie.yaml")
    listed = load_config(floor / "reverie.yaml", ["eval.suites=[knowledge,general,advbench,xstest,false_premise]"])
    assert listed.gate.capability["false_premise.detection"] == 0.5
