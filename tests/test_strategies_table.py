"""Every strategy name reverie.yaml may list has exactly one implementation registered under it."""

from __future__ import annotations

from reverie.phases.strategies import COMPRESS, DREAM
from reverie.strategy_names import COMPRESS_STRATEGIES, DREAM_STRATEGIES


def test_registered_strategies_are_the_named_ones() -> None:
    assert sorted(COMPRESS) == sorted(COMPRESS_STRATEGIES)
    assert sorted(DREAM) == sorted(DREAM_STRATEGIES)
    assert all(strategy.name == name for table in (COMPRESS, DREAM) for name, strategy in table.items())
