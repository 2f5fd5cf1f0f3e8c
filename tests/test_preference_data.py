"""Preference pairs through the data layer: TRL's two formats, quarantine with reasons, dedup against earlier
datasets, the contamination check, the pairs made from feedback, the red-team library and votes, and the CLI."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path

from reverie.data.dedup import ContaminationIndex
from reverie.data.feedback import Feedback
from reverie.data.ingest import SourceSpec
from reverie.data.knowledge import load_knowledge
from reverie.data.preference import load_pairs, preference_datasets
from reverie.data.preference_ingest import PairChecks, PairIndex, ingest_pairs, ingest_preference_path, screen_pairs
from reverie.data.preference_sources import feedback_pairs, redteam_pairs, vote_pairs
from reverie.data.readers import read_rows
from reverie.data.records import Rejected, content_id
from reverie.data.redteam import REFUSAL, RedTeamItem
from reverie.data.splits import in_safety_held_out, knowledge_held_out, preference_split
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

from conftest import make_workspace, reverie

HH = SourceSpec("hh", 2, "MIT")
LONG_ANSWER = ("Preheat the oven, whisk the eggs with sugar until pale, fold in the flour gently, pour the batter "
               "into a buttered tin and bake for twenty five minutes until a skewer comes out clean.")


def words(text: str) -> int:
    return len(text.split())


def checks(max_prompt_tokens: int = 64, min_tier: int = 1, evaluation: dict[str, str] | None = None) -> PairChecks:
    return PairChecks(words, max_prompt_tokens, min_tier, ContaminationIndex(evaluation or {}))


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def run(path: Path, **kwargs):
    return ingest_pairs(read_rows(path), HH, "general", PairIndex(0.8), checks(**kwargs))


def assert_counts_add_up(result, rows: int) -> None:
    assert result.steps[0].rows_in == rows
    for before, after in zip(result.steps, result.steps[1:]):
        assert after.rows_in == before.kept
    for step in result.steps:
        assert step.rows_in == step.kept + step.removed + step.quarantined
    assert len(result.pairs) + len(result.rejected) == rows


def pref_workspace(root: Path) -> Workspace:
    Workspace.init(root)  # sources team (tier 3), web (tier 1), teacher
    return Workspace.open(root, validate=True)


def test_malformed_rows_are_quarantined_with_reasons_and_good_rows_all_kept(tmp_path: Path) -> None:
    user = [{"role": "user", "content": "How do I bake a sponge cake?"}]
    rows = [
        {"prompt": "How do I bake a sponge cake?", "chosen": LONG_ANSWER, "rejected": "Buy one.", "margin": 2},
        {"prompt": user, "chosen": [{"role": "assistant", "content": "Whisk, fold, bake."}],
         "rejected": [{"role": "assistant", "content": "No idea."}], "lang": "en"},
        {"prompt": "Name a colour.", "rejected": "Blue."},
        {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "   "},
        {"prompt": "Name a colour.", "chosen": "Red  is nice.", "rejected": "Red is\nnice."},
        {"prompt": " ".join(["word"] * 20), "chosen": "Red.", "rejected": "Blue."},
        {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Blue.", "margin": "strong"},
        {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Blue.", "margin": True},
        {"prompt": [*user, {"role": "assistant", "content": "Sure."}], "chosen": "Red.", "rejected": "Blue."},
        {"prompt": "Name a colour.", "chosen": 5, "rejected": "Blue."},
        '{"prompt": "Name a colour.", "chosen": "Red\\ud800", "rejected": "Blue."}',
        "{not json",
        {"prompt": "Name a shape.", "chosen": "A circle.", "rejected": "A colour.", "margin": "0.5"},  # a CSV cell
    ]
    path = write_rows(tmp_path / "pairs.jsonl", rows)
    result = run(path, max_prompt_tokens=10)
    assert_counts_add_up(result, rows=13)
    reasons = {int(r.origin.rsplit(":", 1)[1]): (r.step, r.reason) for r in result.rejected}
    assert reasons == {
        3: ("schema", "missing 'chosen'"),
        4: ("schema", "rejected is empty"),
        5: ("schema", "chosen and rejected are the same answer (up to whitespace): nothing to prefer"),
        6: ("prompt length", "prompt has 20 tokens, over align.max_prompt_tokens 10"),
        7: ("schema", 'margin: expected a finite number, got "strong"'),
        8: ("schema", "margin: expected a finite number, got true"),
        9: ("schema", "prompt: the conversation must end with a user turn, not 'assistant'"),
        10: ("schema", "chosen: expected a string or one assistant message, got int"),
        11: ("schema", "chosen: lone surrogate U+D800 at character 3: not valid Unicode text"),
        12: ("schema", reasons[12][1]),
    }
    assert "not valid JSON" in reasons[12][1] and all(r.row is not None for r in result.rejected)
    first, second, third = result.pairs
    assert (first.margin, first.source, first.tier, first.origin) == (2.0, "hh", 2, f"{path}:1")
    assert second.chosen == "Whisk, fold, bake." and second.meta == {"lang": "en"} and second.messages() == user
    assert third.margin == 0.5


def test_both_shared_formats_parse_into_conversational_pairs(tmp_path: Path) -> None:
    hh = {"prompt": [{"role": "user", "content": "what are some pranks with a pen?"},
                     {"role": "assistant", "content": "Practical jokes?"}, {"role": "user", "content": "yep"}],
          "chosen": "I'd rather not help with pranks that could hurt someone.", "rejected": "Draw on their face."}
    alpaca = {"prompt": [{"role": "user", "content": "How do I dice without slicing my finger"}],
              "chosen": LONG_ANSWER, "rejected": "Carefully.", "chosen_model": "gpt4_1106_preview",
              "rejected_model": "claude-2.1", "judge_preference": 1.0474, "dataset": "helpful_base"}
    result = run(write_rows(tmp_path / "shared.jsonl", [hh, alpaca]))
    assert not result.rejected
    from_hh, from_alpaca = result.pairs
    assert [m["role"] for m in from_hh.messages()] == ["user", "assistant", "user"]
    assert from_hh.trl_row()["chosen"] == [{"role": "assistant", "content": hh["chosen"]}]
    assert from_alpaca.meta == {"chosen_model": "gpt4_1106_preview", "rejected_model": "claude-2.1",
                                "judge_preference": 1.0474, "dataset": "helpful_base"}
    assert from_alpaca.prompt_text() == "How do I dice without slicing my finger"


def test_the_shared_files_ingest_with_every_row_accounted_for(tmp_path: Path, shared_data: Path) -> None:
    for name in ("hh_rlhf_harmless.jsonl", "alpaca_eval_pairs.jsonl"):
        lines = (shared_data / "preference" / name).read_text(encoding="utf-8").splitlines()[:50]
        sample = tmp_path / name
        sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = run(sample, max_prompt_tokens=512)
        assert_counts_add_up(result, rows=50)
        assert len(result.pairs) >= 40 and not [r for r in result.rejected if r.step == "schema"]


def test_pairs_are_deduplicated_against_earlier_datasets(tmp_path: Path) -> None:
    ws = pref_workspace(tmp_path / "ws")
    original = {"prompt": "How do I bake a sponge cake?", "chosen": LONG_ANSWER, "rejected": "Buy one at a shop."}
    first, _ = ingest_preference_path(ws, write_rows(tmp_path / "a.jsonl", [original]), "team", "general", None, words)
    near = dict(original, chosen=LONG_ANSWER.replace("comes out clean", "comes out dry"),  # 3-gram Jaccard 0.94
                rejected="Buy one at the shop.")
    other_rejected = dict(original, rejected="Microwave the flour for an hour, then serve it cold.")
    new = {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Seven."}
    second_path = write_rows(tmp_path / "b.jsonl", [original, near, other_rejected, new, new])
    second, result = ingest_preference_path(ws, second_path, "web", "general", "b2", words)
    [kept_original] = load_pairs(ws, first)
    new_id = result.pairs[-1].id
    assert [(r.origin, r.step, r.reason) for r in result.rejected] == [
        (f"{second_path}:1", "exact dedup", f"repost: exact duplicate of pair {kept_original.id} from source 'team'"),
        (f"{second_path}:5", "exact dedup", f"exact duplicate of pair {new_id}"),
        (f"{second_path}:2", "near dedup", f"repost: near duplicate of pair {kept_original.id} from source 'team'"),
    ]
    # the same chosen answer against another rejected one is another comparison: kept
    assert [p.rejected for p in result.pairs] == [other_rejected["rejected"], "Seven."]
    assert [(d.name, d.kind, d.cycle_id, d.rows) for d in preference_datasets(ws)] == [
        ("preference/a", "preference", None, 1), ("preference/b2", "preference", None, 2)]
    folder = ws.artifacts.path(second.hash)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["name"] == "web" and [s["step"] for s in manifest["steps"]][-1] == "near dedup"
    assert len((folder / "rejected.jsonl").read_text().splitlines()) == 3
    assert {ws.registry.get_dataset(d.hash).kind for d in preference_datasets(ws)} == {"preference"}


def test_a_pair_that_leaks_a_held_out_question_is_removed(tmp_path: Path) -> None:
    ws = pref_workspace(tmp_path / "ws")
    _, qa = knowledge_held_out(load_knowledge("demo", ws.root))[0]
    leak = {"prompt": [{"role": "user", "content": qa.question}], "chosen": qa.answer, "rejected": "I do not know."}
    clean = {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Seven."}
    dataset, result = ingest_preference_path(ws, write_rows(tmp_path / "p.jsonl", [leak, clean]), "team", "general",
                                             None, words)
    [rejected] = result.rejected
    assert rejected.step == "contamination" and "overlaps evaluation item" in rejected.reason
    assert [s.removed for s in result.steps if s.step == "contamination"] == [1]
    assert [p.chosen for p in load_pairs(ws, dataset)] == ["Red."]


def feedback(ident: str, prompt: str, answer: str, rating: str, correction: str | None = None) -> Feedback:
    return Feedback(id=ident, at=0.0, model_id="m1", prompt=prompt, answer=answer, rating=rating,
                    correction=correction)


def test_feedback_pairs_prefer_corrections_and_thumbs_up_answers() -> None:
    rows = [
        feedback("f1", "Capital of France?", "Lyon", "down", correction="Paris"),
        feedback("f2", "Capital of France?", "Paris", "up"),
        feedback("f3", "Capital of France?", "Lyon", "down"),
        feedback("f4", "Largest planet?", "Mars", "down"),  # no correction, nobody liked another answer
        feedback("f5", "Largest planet?", "Jupiter", "down", correction="Jupiter"),
    ]
    pairs = feedback_pairs(rows)
    assert sorted((p.prompt, p.chosen, p.rejected, p.origin) for p in pairs) == [
        ("Capital of France?", "Paris", "Lyon", "f1,f2,f3"),  # the correction and the thumbs-up agree: one pair
        ("Largest planet?", "Jupiter", "Jupiter", "f5"),
    ]
    assert {p.source for p in pairs} == {"feedback"}
    screened = screen_pairs(pairs, PairIndex(0.8), checks(min_tier=0))
    assert [p.origin for p in screened.pairs] == ["f1,f2,f3"]
    assert [(r.origin, r.step) for r in screened.rejected] == [("f5", "schema")]


def items_on_both_sides() -> list[RedTeamItem]:
    """For each of must_refuse True and False: two items in the training half, one in the held-out half."""
    wanted = {(refuse, held): 2 if not held else 1 for refuse in (True, False) for held in (True, False)}
    items = []
    for number in count():
        prompt = f"request number {number}"
        refuse, held = number % 2 == 0, in_safety_held_out(content_id(prompt))
        if wanted[(refuse, held)]:
            wanted[(refuse, held)] -= 1
            items.append(RedTeamItem(id=content_id(prompt), prompt=prompt, category="other", must_refuse=refuse,
                                     source="test", added_at=0.0))
        if not any(wanted.values()):
            return items


def test_redteam_pairs_use_only_the_training_half_and_skip_what_teaches_nothing() -> None:
    items = items_on_both_sides()
    train = [i for i in items if not in_safety_held_out(i.id)]
    harmful = [i for i in train if i.must_refuse]
    safe = [i for i in train if not i.must_refuse]
    answers = {i.id: f"Here is how: {i.prompt}." for i in items}
    answers[harmful[1].id] = REFUSAL  # already refuses
    answers[safe[1].id] = "I won't help with that."  # over-refuses a safe look-alike
    pairs, skipped = redteam_pairs(items, answers, lambda answer: answer == REFUSAL or "won't" in answer)
    assert not {p.origin for p in pairs} & {i.id for i in items if in_safety_held_out(i.id)}
    assert [(p.origin, p.chosen, p.rejected) for p in pairs] == sorted(
        [(harmful[0].id, REFUSAL, answers[harmful[0].id]), (safe[0].id, answers[safe[0].id], REFUSAL)],
        key=lambda row: [i.id for i in items].index(row[0]))
    assert {(p.bucket, p.source) for p in pairs} == {("safety", "redteam")}
    assert sorted((r.origin, r.reason.split(":")[0]) for r in skipped) == sorted([
        (harmful[1].id, "the model already refuses this harmful request"),
        (safe[1].id, "the model refuses this safe look-alike")])
    assert all(isinstance(r, Rejected) for r in skipped)


def test_vote_pairs_prefer_the_majority_over_each_distinct_minority_answer() -> None:
    votes = ["Paris", "paris.", "lyon", "Paris", "Nice", "Lyon", "Lyon", "Paris"]
    pairs = vote_pairs("Capital of France?", votes, "Paris")
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [("Paris", "Lyon", "dream-vote"),
                                                               ("Paris", "Nice", "dream-vote")]
    assert pairs[0].meta == {"votes": 4, "rejected_votes": 3, "of": 8}
    assert vote_pairs("Capital of France?", ["Paris", "Paris"], "Paris") == []


def test_cli_ingests_preference_pairs_with_the_model_tokenizer(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny_model_dir, data={"sources": {"hh": {"tier": 2, "licence": "MIT"}}},
                          align={"max_prompt_tokens": 24})
    path = write_rows(tmp_path / "harmless.jsonl", [
        {"prompt": [{"role": "user", "content": "Help me hurt someone."}], "chosen": REFUSAL, "rejected": "Sure."},
        {"prompt": " ".join(["Velmora"] * 30), "chosen": "No.", "rejected": "Yes."},
    ])
    result = reverie("data", "ingest", str(path), "--source", "hh", "--kind", "preference", "--bucket", "safety",
                     "-w", str(root))
    assert "preference/harmless" in result.stdout and "prompt length" in result.stdout
    assert f"{path}:2: prompt length: prompt has" in result.stdout
    assert "over align.max_prompt_tokens 24" in result.stdout
    ws = Workspace.open(root)
    [dataset] = preference_datasets(ws)
    assert isinstance(dataset, DatasetRecord) and (dataset.kind, dataset.rows) == ("preference", 1)
    [pair] = load_pairs(ws, dataset)
    assert (pair.bucket, pair.source, pair.tier, pair.origin) == ("safety", "hh", 2, f"{path}:1")
    assert ws.registry.list_datasets(kind="pool") == []  # --kind preference does not touch the SFT pool
    stats = reverie("data", "stats", "-w", str(root)).stdout
    assert "preference/harmless" in stats and "│ safety │     1 │" in stats
    assert f"│ {preference_split(pair.prompt_id()):<8} │     1 │" in stats  # every split shown, empty ones with 0
    assert all(f"│ {split:<8} │     0 │" in stats for split in ("policy", "judge", "held_out")
               if split != preference_split(pair.prompt_id()))


def test_a_pair_asking_a_preference_suite_prompt_is_removed_once_the_gate_runs_that_suite(tmp_path: Path) -> None:
    pref_workspace(tmp_path / "ws")
    prompt = "Write a short poem about the sea and the ships that sail on it."
    (tmp_path / "ws" / "prompts.jsonl").write_text(json.dumps({"instruction": prompt}) + "\n")
    ws = Workspace.open(tmp_path / "ws", ["eval.preference_prompts=prompts.jsonl",
                                          "eval.suites=[knowledge, general, advbench, xstest, preference]"])
    asked = {"prompt": prompt, "chosen": "Waves rise and fall.", "rejected": "No."}
    _, result = ingest_preference_path(ws, write_rows(tmp_path / "p.jsonl", [asked]), "team", "general", None, words)
    [rejected] = result.rejected
    assert rejected.step == "contamination" and "preference/0" in rejected.reason
