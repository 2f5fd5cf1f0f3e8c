"""The forgetting check is sized to see a 2-point drop: the paired test's power, the items it needs, the built-in
items that supply them, and the fast scorer that keeps them affordable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reverie.config import EvalConfig
from reverie.data.files import read_builtin
from reverie.data.general_items import generated_families, number_words
from reverie.data.multiple_choice import ChoiceItem, load_choice_items
from reverie.engines.suites import ItemResult, SuiteReport
from reverie.engines.suites.forgetting import forgetting_power_line
from reverie.stats import PRIOR_FLIP_RATE, flip_rate, paired_items_needed, paired_power


def test_flip_rate_counts_the_items_whose_score_changed() -> None:
    assert flip_rate([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        flip_rate([1, 0], [1])


def test_power_matches_the_issue_and_the_items_needed_reach_it() -> None:
    # 600 PIQA items at a 13% flip rate only hint at a 2-point drop; about 1,245 give an even chance.
    assert paired_power(0.02, 600, 0.13) == pytest.approx(0.275, abs=0.005)
    assert paired_power(0.02, 1245, 0.13) == pytest.approx(0.5, abs=0.01)
    needed = paired_items_needed(0.02, 0.13)
    assert needed == 2544
    assert paired_power(0.02, needed, 0.13) >= 0.8 > paired_power(0.02, needed - 1, 0.13)
    assert paired_items_needed(0.02, 0.05) < paired_items_needed(0.02, 0.13)  # fewer flips, less noise
    assert paired_power(0.10, 10, 0.02) == paired_power(0.10, 10, 0.10)  # a 10-point drop flips 10% at least
    assert paired_power(1.0, 5, 1.0) == 1.0  # every item lost: no noise at all


def test_power_agrees_with_a_simulated_paired_test() -> None:
    """Draw paired 0/1 differences with a known flip rate and drop; the share of runs whose 95% interval of the
    mean difference excludes zero is the power."""
    rng = np.random.default_rng(0)
    n, flips, drop, runs = 400, 0.13, 0.04, 4000
    worse, better = (flips + drop) / 2, (flips - drop) / 2
    draws = rng.choice([-1.0, 1.0, 0.0], p=[worse, better, 1 - flips], size=(runs, n))
    means, errors = draws.mean(axis=1), draws.std(axis=1, ddof=1) / np.sqrt(n)
    detected = np.mean(-means - 1.96 * errors > 0)
    assert detected == pytest.approx(paired_power(drop, n, flips), abs=0.03)


def test_the_default_check_has_the_items_a_two_point_drop_needs() -> None:
    needed = paired_items_needed(0.02, PRIOR_FLIP_RATE)
    default = EvalConfig().general_limit
    items = load_choice_items("builtin", Path("."), default)
    assert default >= needed and len(items) == default
    hand_written = [json.loads(line)["goal"] for line in read_builtin("demo/general_mc.jsonl").splitlines()]
    assert [item.goal for item in items[: len(hand_written)]] == hand_written  # the tiny preset's 20 are unchanged
    assert len({item.goal for item in items}) == len(items)
    assert all(item.choices[0] != item.choices[1] and item.label in (0, 1) for item in items)
    assert abs(sum(item.label for item in items) / len(items) - 0.5) < 0.05
    assert load_choice_items("builtin", Path("."), default) == items  # fixed: no randomness, no clock


def right(item: ChoiceItem) -> str:
    return item.choices[item.label]


def test_generated_items_are_right_by_construction() -> None:
    families = generated_families()
    capitals = {item.goal: right(item) for item in families["capitals"]}
    assert capitals["The capital of Australia is"] == "Canberra."
    addition = families["addition"][0]
    a, _, b, _ = addition.goal.split()
    assert right(addition) == f"{int(a) + int(b)}."
    assert number_words(347) == "three hundred and forty-seven" and number_words(40) == "forty"
    verbs = {item.goal: right(item) for item in families["irregular_verbs"]}
    assert verbs["Today I go; yesterday I"] == "went."
    prefix = load_choice_items("builtin", Path("."), 400)[60:]
    assert len({item.goal.split()[0] for item in prefix}) > 10  # any prefix mixes the families


def _report(values: list[float]) -> SuiteReport:
    return SuiteReport("general", "general@x",
                       [ItemResult(str(i), "", "", {"accuracy": v}) for i, v in enumerate(values)], 0)


def test_eval_states_the_power_from_the_observed_flips_or_the_prior() -> None:
    release = _report([1.0] * 90 + [0.0] * 10)
    line = forgetting_power_line(release, None, 0.95)
    assert "100 paired items" in line and "13% assumed" in line and "needs 2544 items" in line
    candidate = _report([0.0] * 5 + [1.0] * 85 + [0.0] * 5 + [1.0] * 5)  # 10 of 100 items flipped
    line = forgetting_power_line(candidate, release, 0.95)
    assert "flip rate 10.0% measured on the 100 items" in line
    assert f"power {paired_power(0.02, 100, 0.10):.2f}" in line and f"needs {paired_items_needed(0.02, 0.10)}" in line
    assert "no item changed" in forgetting_power_line(release, release, 0.95)


def test_the_fast_scorer_gives_the_reference_log_likelihoods(tiny_model_dir: Path) -> None:
    from reverie.config import ModelConfig
    from reverie.engines.models import load_pretrained
    from reverie.engines.scoring import continuation_logprobs
    from reverie.engines.suites.general import choice_logprobs

    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    tokenizer = loaded.tokenizer
    items = load_choice_items("builtin", Path("."), 90)
    rows = [(tokenizer(item.goal)["input_ids"], tokenizer(" " + c, add_special_tokens=False)["input_ids"])
            for item in items for c in item.choices]
    reference = continuation_logprobs(loaded.model, tokenizer, rows, 16)
    fast = choice_logprobs(loaded.model, tokenizer, rows, 16)
    assert np.allclose(fast, reference, atol=1e-4)
