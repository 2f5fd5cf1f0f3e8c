"""Confidence intervals by the percentile bootstrap, seeded so that the same scores always give the same
interval (and so the same Gate decision); the power of the paired test, to size a check before it runs; and the
calibration of confidences against outcomes (expected calibration error, Brier score); and score intervals for
live rates (serving's canary and alarm)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

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


PRIOR_FLIP_RATE = 0.13  # share of PIQA items whose 0/1 score differed between a demo cycle's base and release


def flip_rate(before: list[float], after: list[float]) -> float:
    """Share of paired 0/1 scores that differ: the discordant items, which alone carry a paired test's signal."""
    if len(before) != len(after) or not before:
        raise ValueError(f"flip rate needs the same, non-empty items: {len(before)} vs {len(after)}")
    return sum(a != b for a, b in zip(after, before)) / len(before)


def paired_power(drop: float, n: int, flips: float, confidence: float = 0.95) -> float:
    """Chance that the paired interval of a true `drop` (on 0/1 scores, `flips` of the items discordant) excludes
    zero with `n` items: the normal approximation of the Gate's paired bootstrap, whose per-item difference has
    variance flips - drop**2. A drop of d flips at least d of the items, so a lower flip rate is read as d."""
    if not 0 < drop <= 1 or n < 1:
        raise ValueError(f"power needs a drop in (0, 1] and at least one item: drop {drop}, n {n}")
    variance = max(flips, drop) - drop**2
    if variance <= 0:
        return 1.0
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    return NormalDist().cdf(drop * math.sqrt(n / variance) - z)


def paired_items_needed(drop: float, flips: float, power: float = 0.8, confidence: float = 0.95) -> int:
    """Fewest paired items whose interval excludes zero with probability `power` when the true drop is `drop`."""
    if not 0 < drop <= 1 or not 0 < power < 1:
        raise ValueError(f"items needed: drop must be in (0, 1] and power in (0, 1), got {drop}, {power}")
    variance = max(flips, drop) - drop**2
    z = NormalDist().inv_cdf((1 + confidence) / 2) + NormalDist().inv_cdf(power)
    return max(1, math.ceil(z**2 * variance / drop**2))


CALIBRATION_BINS = 10


def brier(confidence: float, correct: bool) -> float:
    """One prediction's squared error: (confidence - outcome)**2; its mean over items is the Brier score."""
    return (confidence - float(correct)) ** 2


def calibration_gaps(confidences: list[float], correct: list[bool], bins: int = CALIBRATION_BINS) -> list[float]:
    """Each item's bin gap |accuracy - mean confidence| over equal-width confidence bins: their mean over the items
    is the expected calibration error (ECE = sum over bins of share * gap), so it can be stored per item."""
    if len(confidences) != len(correct):
        raise ValueError(f"calibration needs one outcome per confidence: {len(confidences)} vs {len(correct)}")
    members: dict[int, list[int]] = {}
    for index, confidence in enumerate(confidences):
        members.setdefault(min(bins - 1, max(0, int(confidence * bins))), []).append(index)
    gaps = [0.0] * len(confidences)
    for indices in members.values():
        gap = abs(sum(correct[i] for i in indices) / len(indices) - sum(confidences[i] for i in indices) / len(indices))
        for i in indices:
            gaps[i] = gap
    return gaps


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """A rate with its Wilson score interval: unlike the normal approximation it stays inside [0, 1] and does not
    collapse to a point at 0 or n successes, which is where live error and refusal rates sit."""
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 0)
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    rate, spread = successes / n, z * z / n
    centre = (rate + spread / 2) / (1 + spread)
    half = z * math.sqrt(rate * (1 - rate) / n + spread / (4 * n)) / (1 + spread)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, where rounding would stray
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(rate, low, high, n)


def rate_difference_interval(a: tuple[int, int], b: tuple[int, int], confidence: float = 0.95) -> Interval:
    """The difference of two independent rates, a - b (each given as (successes, n)), with Newcombe's hybrid
    score interval, built from the two Wilson intervals; with no observations on a side, the whole range."""
    first, second = wilson_interval(*a, confidence), wilson_interval(*b, confidence)
    if not first.n or not second.n:
        return Interval(float("nan"), -1.0, 1.0, min(first.n, second.n))
    difference = first.mean - second.mean
    low = difference - math.hypot(first.mean - first.low, second.high - second.mean)
    high = difference + math.hypot(first.high - first.mean, second.mean - second.low)
    return Interval(difference, low, high, min(first.n, second.n))
