"""Confidence intervals by the percentile bootstrap, seeded so that the same scores always give the same
interval (and so the same Gate decision)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def bootstrap_ci(values: list[float], confidence: float = 0.95, seed: int = 0) -> Interval:
    """The mean of `values` with a percentile-bootstrap interval over items."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(RESAMPLES, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(data.mean()), float(low), float(high), int(data.size))


def paired_difference_ci(before: list[float], after: list[float], confidence: float = 0.95,
                         seed: int = 0) -> Interval:
    """after - before on the same items, resampling items (paired), so that item difficulty cancels."""
    if len(before) != len(after):
        raise ValueError(f"paired scores need the same items: {len(before)} vs {len(after)}")
    return bootstrap_ci([a - b for a, b in zip(after, before)], confidence, seed)
