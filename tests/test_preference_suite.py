"""The Gate's preference suite: prompts, pairwise judging in both orders, the length-controlled win rate, the
runner's opponent and caches, the judges, and the Gate's floor and judge checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from reverie.config import ReverieConfig
from reverie.cycle import ensure_release, override_release, run_cycle
from reverie.engines.models import load_pretrained
from reverie.engines.preference_judge import LMJudge, RewardModelJudge, judge_record, load_judge
from reverie.engines.release_decision import decide
from reverie.engines.suites import ItemResult, SuiteReport, SuiteRunner
from reverie.data.preference import load_preference_prompts
from reverie.engines.suites.preference import PreferenceSuite, length_controlled, outcome
from reverie.config import ModelConfig
from reverie.errors import ReverieError
from reverie.phases.gate import judge_reasons, without_suite
from reverie.phases.outputs import DreamOutput, StrategyOutcome
from reverie.registry import ModelRecord
from reverie.reporting.overview import overview
from reverie.reward_models import RewardModelReport, TrainingSummary, report_path
from reverie.workspace import Workspace

from conftest import TINY_SETTINGS, make_workspace, merge


class SideJudge:
    """Prefers whichever answer is in `favoured` (a fixed opinion, whatever the order)."""

    order_free = False
    model_id = None

    def __init__(self, favoured: set[str], identity: str = "side judge"):
        self.favoured = favoured
        self.identity = identity
        self.calls = 0

    def prefer(self, messages: list[list[dict]], first: list[str], second: list[str]) -> list[float]:
        self.calls += 1
        return [1.0 if a in self.favoured else 0.0 if b in self.favoured else 0.5 for a, b in zip(first, second)]


class LongerJudge:
    """Prefers the longer answer: all that a length-biased judge sees."""

    order_free = False
    model_id = None
    identity = "longer"

    def prefer(self, messages: list[list[dict]], first: list[str], second: list[str]) -> list[float]:
        return [float(len(a) > len(b)) + 0.5 * (len(a) == len(b)) for a, b in zip(first, second)]


class FirstJudge:
    """Always prefers the answer shown first: pure position bias."""

    order_free = False
    model_id = None
    identity = "first"

    def prefer(self, messages: list[list[dict]], first: list[str], second: list[str]) -> list[float]:
        return [0.9] * len(first)


def suite_of(n: int) -> PreferenceSuite:
    return PreferenceSuite([f"prompt {i}" for i in range(n)], answer_tokens=8, batch_size=4)


def test_the_builtin_prompts_load_and_a_limit_cuts_them(tmp_path: Path) -> None:
    prompts = load_preference_prompts("builtin", tmp_path, 1000)
    assert len(prompts) >= 40 and len(set(prompts)) == len(prompts) and all(p.strip() == p and p for p in prompts)
    assert load_preference_prompts("builtin", tmp_path, 5) == prompts[:5]


def test_a_prompts_file_takes_instruction_or_prompt_and_a_bad_line_is_named(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl"
    good.write_text('{"instruction": "Say hi."}\n\n{"prompt": "Say bye."}\n')
    assert load_preference_prompts("p.jsonl", tmp_path, 10) == ["Say hi.", "Say bye."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Fine."}\n{"prompt": ["not", "text"]}\n')
    with pytest.raises(ReverieError, match=r"bad.jsonl, line 2: expected an object with a non-empty text"):
        load_preference_prompts("bad.jsonl", tmp_path, 10)
    bad.write_text('{"instruction": "Fine."}\n{oops\n')
    with pytest.raises(ReverieError, match=r"bad.jsonl, line 2: not JSON"):
        load_preference_prompts("bad.jsonl", tmp_path, 10)
    with pytest.raises(ReverieError, match=r"eval.preference_prompts: .*missing.jsonl does not exist"):
        load_preference_prompts("missing.jsonl", tmp_path, 10)


def test_a_win_needs_both_orders() -> None:
    assert outcome(1.0, 1.0) == 1.0 and outcome(0.0, 0.0) == 0.0
    assert outcome(0.9, 0.1) == outcome(0.5, 0.5) == 0.5  # the order decided, or a tie
    assert outcome(0.52, 0.51) == pytest.approx(0.515)  # an unsure judge gives no whole win


def test_a_judge_that_always_prefers_the_candidate_gives_win_rate_one_and_the_other_way_zero() -> None:
    suite = suite_of(12)
    ours, theirs = [f"ours {i}" for i in range(12)], [f"theirs {i}" for i in range(12)]
    won = SuiteReport("preference", "k", suite.compare(ours, theirs, SideJudge(set(ours)), "m-ref"), 0).summary()
    assert won["win_rate"].mean == won["win_rate"].low == won["win_rate"].high == 1.0 and won["win_rate"].n == 12
    lost = SuiteReport("preference", "k", suite.compare(ours, theirs, SideJudge(set(theirs)), "m-ref"), 0).summary()
    assert lost["win_rate"].mean == lost["win_rate"].high == 0.0
    mixed = [1.0] * 6 + [0.0] * 6
    split = SuiteReport("preference", "k", suite.compare(ours, theirs, SideJudge(set(ours[:6] + theirs[6:])), "m-ref"),
                        0)
    interval = split.summary()["win_rate"]
    assert interval.mean == 0.5 and interval.low < 0.5 < interval.high
    assert list(split.values("win_rate").values()) == mixed


def test_position_bias_is_a_tie_and_identical_answers_are_never_judged() -> None:
    suite = suite_of(4)
    items = suite.compare(["a", "b", "c", "d"], ["x", "y", "z", "w"], FirstJudge(), "m-ref")
    assert [i.scores["win_rate"] for i in items] == [0.5] * 4
    judge = SideJudge({"a"})
    same = suite.compare(["a", "b", "c", "d"], ["a", "b", "c", "d"], judge, "m-ref")
    assert judge.calls == 0 and all(i.scores["win_rate"] == 0.5 and i.detail["judge"] is None for i in same)
    with pytest.raises(ReverieError, match="1 answers differ from m-ref's and no judge is set"):
        suite_of(2).compare(["a", "b"], ["a", "c"], None, "m-ref")


def test_a_judge_that_only_likes_length_has_a_high_win_rate_and_a_length_controlled_one_near_half() -> None:
    diffs = list(range(10, 330, 10)) + list(range(-10, -90, -10))  # the candidate is longer on 32 of 40
    ours, theirs = ["x" * (200 + d) for d in diffs], ["y" * 200 for _ in diffs]
    items = suite_of(40).compare(ours, theirs, LongerJudge(), "m-ref")
    summary = SuiteReport("preference", "k", items, 0).summary()
    assert summary["win_rate"].mean == 0.8
    assert abs(summary["lc_win_rate"].mean - 0.5) < 0.1
    assert summary["length"].mean == pytest.approx(200 + np.mean(diffs)) and summary["reference_length"].mean == 200


def test_length_control_leaves_a_length_blind_judge_alone_and_its_mean_is_the_fitted_rate() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 400, 200).tolist()
    reference = rng.integers(50, 400, 200).tolist()
    wins = (rng.random(200) < 0.7).astype(float).tolist()  # 70% wins, unrelated to length
    controlled = length_controlled(wins, lengths, reference)
    assert abs(np.mean(controlled) - np.mean(wins)) < 0.03


@pytest.mark.parametrize("wins, lengths, reference", [
    ([1.0] * 5, [10, 20, 30, 40, 50], [5] * 5),  # all wins: no finite intercept
    ([0.0] * 5, [1, 2, 3, 4, 5], [9] * 5),  # all losses
    ([0.5] * 4, [3, 3, 9, 1], [3, 3, 1, 9]),  # all ties
    ([1.0, 0.0, 0.5], [7, 7, 7], [7, 7, 7]),  # no length variation
    ([1.0, 0.0], [100, 1], [1, 100]),  # lengths separate wins from losses perfectly
    ([1.0], [3], [4]),
    ([], [], []),
])
def test_length_control_is_finite_on_degenerate_inputs(wins: list[float], lengths: list[int],
                                                       reference: list[int]) -> None:
    controlled = length_controlled(wins, lengths, reference)
    assert len(controlled) == len(wins) and all(math.isfinite(v) for v in controlled)
    if wins:  # none of these has a length effect to remove: the mean is the raw win rate
        assert np.mean(controlled) == pytest.approx(np.mean(wins), abs=1e-6)


class FixedScorer:
    def __init__(self, rewards: dict[str, float]):
        self.rewards = rewards

    def score(self, messages_list: list[list[dict]], answers: list[str]) -> list[float]:
        assert len(messages_list) == len(answers)
        return [self.rewards[a] for a in answers]


def test_a_reward_model_judge_is_bradley_terry_and_order_free() -> None:
    judge = RewardModelJudge(FixedScorer({"good": 2.0, "bad": 0.0}), "reward model m-1 (alias judge)", "m-1")
    messages = [[{"role": "user", "content": "q"}]] * 2
    first = judge.prefer(messages, ["good", "bad"], ["bad", "good"])
    assert first == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))])
    items = suite_of(2).compare(["good", "bad"], ["bad", "good"], judge, "m-ref")
    assert [i.scores["win_rate"] for i in items] == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))])


def test_an_lm_judge_gives_a_probability_per_pair(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    judge = LMJudge(loaded.model, loaded.tokenizer, 4, f"lm:{tiny_model_dir}")
    messages = [[{"role": "user", "content": "Say hi."}]] * 3
    probabilities = judge.prefer(messages, ["hi", "hello there", "yo"], ["hello there", "hi", "hey"])
    assert len(probabilities) == 3 and all(0 < p < 1 for p in probabilities)
    assert judge.prefer(messages[:1], ["hi"], ["hello there"]) == pytest.approx(probabilities[:1], abs=1e-5)


def test_a_missing_or_wrong_judge_alias_says_how_to_make_one(workspace_dir: Path) -> None:
    ws = Workspace.open(workspace_dir)
    with pytest.raises(ReverieError, match=r"no model behind the alias 'judge'; .*`reverie rm train --alias judge`"):
        load_judge(ws, "judge")
    ensure_release(ws)
    with pytest.raises(ReverieError, match=r"the alias 'release' points at m-\w+, a base model, not a reward model"):
        load_judge(ws, "release")
    with pytest.raises(ReverieError, match="'lm:' needs a model source"):
        load_judge(ws, "lm: ")


def changed_model(tmp_path: Path, tiny_model_dir: Path, name: str, scale: float) -> Path:
    """The tiny model with its final norm scaled: by 0, every logit is 0 (a judge with no preference, P = 0.5
    exactly); by -1, greedy answers that are not the plain model's (which repeats a newline, so answers nothing)."""
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    loaded.model.model.norm.weight.data.mul_(scale)
    directory = tmp_path / name
    loaded.model.save_pretrained(directory, safe_serialization=True)
    loaded.tokenizer.save_pretrained(directory)
    return directory


def test_the_runner_answers_each_model_once_judges_against_the_release_and_the_release_ties_itself(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    judge_spec = f"lm:{changed_model(tmp_path, tiny_model_dir, 'zero', 0.0)}"
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir,
                                       eval={"preference_limit": 4, "preference_judge": judge_spec}))
    release = ws.registry.get_model(ensure_release(ws))
    candidate = ModelRecord(id="m-other", status="candidate",
                            source=str(changed_model(tmp_path, tiny_model_dir, "other", -1.0)))
    ws.registry.add_model(candidate)
    runner = SuiteRunner(ws)
    itself = runner.report(release, "preference")  # no judge is loaded: a model against itself ties
    assert [i.scores["win_rate"] for i in itself.items] == [0.5] * 4 and itself.means()["lc_win_rate"] == 0.5
    assert all(i.detail["judge"] is None for i in itself.items)
    theirs = runner.answers(release, runner.suite("preference"))
    ours = runner.answers(candidate, runner.suite("preference"))
    assert all(a != b for a, b in zip(ours, theirs))  # every pair needs the judge

    judged = SuiteRunner(ws, preference_judge=SideJudge(set(ours)))
    judged.load = None  # both models' answers are stored: no model is loaded again
    won = judged.report(candidate, "preference")
    assert won.means()["win_rate"] == 1.0 and won.items[0].detail["opponent"] == release.id
    assert won.means()["length"] == pytest.approx(np.mean([len(a) for a in ours]))
    assert ws.registry.get_metrics(candidate.id, won.key)["win_rate"] == 1.0
    lost = SuiteRunner(ws, preference_judge=SideJudge(set(theirs), identity="another judge"))
    lost.load = None
    assert lost.report(candidate, "preference").means()["win_rate"] == 0.0  # another judge, another result

    configured = SuiteRunner(ws).report(candidate, "preference")  # eval.preference_judge, loaded when needed
    assert [i.scores["win_rate"] for i in configured.items] == [0.5] * 4
    assert {i.detail["judge"] for i in configured.items} == {judge_spec}
    assert len({won.key, configured.key, itself.key}) == 3


def test_the_gate_rejects_a_candidate_below_the_win_rate_floor_and_the_card_names_the_judge(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    judge = f"lm:{changed_model(tmp_path, tiny_model_dir, 'zero', 0.0)}"
    root = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"enabled": False},
                          eval={"suites": ["knowledge", "general", "xstest", "preference"], "preference_judge": judge,
                                "preference_limit": 4},
                          gate={"capability": {"preference.win_rate": 0.6}})
    ws = Workspace.open(root)
    outcome = run_cycle(ws)
    assert not outcome.released
    assert outcome.reasons == ["capability: preference.win_rate 0.500 is below the floor 0.600"]
    card = (ws.cards_dir / f"{outcome.model_id}.md").read_text()
    reference = ws.registry.get_cycle(outcome.cycle_id).base_model_id
    assert f"Judge: {judge}, comparing this model's answers with {reference}'s on 4 prompts" in card
    assert "- win rate 0.500 (95% CI 0.500-0.500)" in card
    assert "length-controlled win rate 0.500" in card and "mean answer length" in card
    override_release(ws, outcome.model_id, "preference measured by hand: acceptable")
    shown = overview(ws)["release_scores"]
    scores = {s["metric"]: (s["value"], s["reference"]) for s in shown["scores"]}
    assert shown["model"] == outcome.model_id and scores["preference.win_rate"] == (0.5, 0.5)


def test_a_floor_on_the_win_rate_is_a_gate_threshold_like_any_other() -> None:
    config = ReverieConfig.model_validate(merge(TINY_SETTINGS, {
        "eval": {"suites": ["knowledge", "general", "xstest", "preference"]},
        "gate": {"capability": {"preference.win_rate": 0.6, "preference.lc_win_rate": 0.55}}}))
    def report(suite: str, scores: dict[str, list[float]]) -> SuiteReport:
        n = len(next(iter(scores.values())))
        return SuiteReport(suite, f"{suite}@x", [ItemResult(str(i), "", "", {m: v[i] for m, v in scores.items()})
                                                 for i in range(n)], 0)
    reports = {"knowledge": report("knowledge", {"accuracy": [1.0]}), "general": report("general", {"accuracy": [1.0]}),
               "xstest": report("xstest", {"safe_compliance": [1.0]}),
               "preference": report("preference", {"win_rate": [1.0, 0.0, 0.5], "lc_win_rate": [0.7, 0.6, 0.5]})}
    verdict = decide(reports, reports, config.gate, "m-ref")
    assert verdict.reasons == ["capability: preference.win_rate 0.500 is below the floor 0.600"]
    assert "preference.win_rate" not in without_suite(config.gate, "preference").capability


def reward_model(ws: Workspace, directory: Path, model_id: str, alias: str) -> ModelRecord:
    record = ModelRecord(id=model_id, status="reward", source=str(directory))
    ws.registry.add_reward_model(record, alias)
    return record


def test_the_gate_refuses_a_judge_that_is_the_policy_reward_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir))
    policy = reward_model(ws, tiny_model_dir, "m-policy-rm", "reward")
    with pytest.raises(ReverieError, match="no model behind the alias 'judge'"):  # stops the Gate, clearly
        judge_reasons(ws, None)
    ws.registry.set_alias(policy.id, "test", "judge")  # the judge alias moved onto the policy's reward model
    assert judge_record(ws, "judge").id == policy.id
    [reason] = judge_reasons(ws, None)
    assert reason.startswith("preference: the judge m-policy-rm (eval.preference_judge 'judge') must not be the "
                             "reward model the policy was optimised against")
    assert "it is the policy's reward model (alias 'reward')" in reason


def test_the_gate_refuses_a_judge_the_dream_optimised_against(tmp_path: Path, tiny_model_dir: Path) -> None:
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir))
    judge = reward_model(ws, tiny_model_dir, "m-judge-rm", "judge")
    other = DreamOutput(model="m-x", strategies=[StrategyOutcome(strategy="grpo", kept=True, reason="kept",
                                                                 reward_model="m-other-rm")])
    assert judge_reasons(ws, other) == []
    dream = DreamOutput(model="m-x", strategies=[StrategyOutcome(strategy="grpo", kept=True, reason="kept",
                                                                 reward_model=judge.id)])
    [reason] = judge_reasons(ws, dream)
    assert "the candidate was optimised against it in this cycle's Dream" in reason


def write_training_card(ws: Workspace, model_id: str, alias: str, split: str) -> None:
    summary = TrainingSummary(base="m-base", alias=alias, split=split, pairs=8, truncated=0, datasets=[], settings={},
                              steps=2, resumed_from=0, loss_start=0.7, loss_end=0.6, accuracy_start=0.5,
                              accuracy_end=0.6, seconds=1.0)
    report_path(ws, model_id).parent.mkdir(parents=True, exist_ok=True)
    report_path(ws, model_id).write_text(RewardModelReport(model_id=model_id, training=summary).model_dump_json())


def test_the_gate_refuses_a_judge_trained_on_the_policy_reward_models_split(tmp_path: Path,
                                                                           tiny_model_dir: Path) -> None:
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir))
    reward_model(ws, tiny_model_dir, "m-policy-rm", "reward")
    reward_model(ws, tiny_model_dir, "m-judge-rm", "judge")
    assert judge_reasons(ws, None) == []  # no cards: nothing says they share a split
    write_training_card(ws, "m-policy-rm", "reward", "policy")
    write_training_card(ws, "m-judge-rm", "judge", "judge")
    assert judge_reasons(ws, None) == []
    write_training_card(ws, "m-judge-rm", "judge", "policy")
    [reason] = judge_reasons(ws, None)
    assert "it was trained on the policy split of the preference pairs, like m-policy-rm" in reason
