"""compress.strategies and dream.strategies: names from strategy_names, each at most once, and the keys they
replaced say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from reverie.config import CompressConfig, DreamConfig, load_config
from reverie.errors import ConfigError
from reverie.presets import preset_text
from reverie.strategy_names import COMPRESS_STRATEGIES, DREAM_STRATEGIES


def load_default_with(tmp_path: Path, old: str, new: str) -> str:
    """The error message of load_config on default.yaml with one line changed."""
    text = preset_text("default")
    assert old in text
    path = tmp_path / "reverie.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


def line_of(tmp_path: Path, start: str) -> int:
    lines = (tmp_path / "reverie.yaml").read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if line.startswith(start))


def test_every_strategy_name_is_described_in_its_field() -> None:
    for model, names in ((CompressConfig, COMPRESS_STRATEGIES), (DreamConfig, DREAM_STRATEGIES)):
        description = model.model_fields["strategies"].description
        assert all(f"'{name}': {text}" in description for name, text in names.items())


def test_compress_may_list_no_strategy() -> None:
    assert CompressConfig(strategies=[]).strategies == []


def test_dream_needs_a_strategy(tmp_path: Path) -> None:
    message = load_default_with(tmp_path, "strategies: [seal]", "strategies: []")
    assert f"dream.strategies (line {line_of(tmp_path, '  strategies: []')}): empty: name at least one" in message


def test_unknown_strategy_names_the_known_ones_and_the_line(tmp_path: Path) -> None:
    message = load_default_with(tmp_path, "strategies: [seal]", "strategies: [seal, dreamy]")
    line = line_of(tmp_path, "  strategies: [seal, dreamy]")
    allowed = "'seal', 'self-consistency', 'dpo', 'grpo', 'cot-consistency', 'counterfactual' or 'redteam'"
    assert f"dream.strategies.1 (line {line}): got 'dreamy'; Input should be {allowed}" in message
    message = load_default_with(tmp_path, "strategies: [merge]", "strategies: [squash]")
    line = line_of(tmp_path, "  strategies: [squash]")
    assert f"compress.strategies.0 (line {line}): got 'squash'; Input should be 'merge'" in message


def test_a_strategy_listed_twice_is_named(tmp_path: Path) -> None:
    twice = "strategies: [self-consistency, seal, self-consistency]"
    message = load_default_with(tmp_path, "strategies: [seal]", twice)
    assert "dream.strategies" in message and "self-consistency: listed more than once" in message


@pytest.mark.parametrize("old, new, expected", [
    ("strategies: [merge]", "merge: true",
     "compress.merge: replaced by compress.strategies ([merge], or [] to keep the adapter)"),
    ("strategies: [seal]", "method: self-consistency",
     "dream.method: replaced by dream.strategies, e.g. [self-consistency]"),
])
def test_replaced_keys_say_what_replaced_them(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = load_default_with(tmp_path, old, new)
    assert "1 problem(s)" in message and expected in message
