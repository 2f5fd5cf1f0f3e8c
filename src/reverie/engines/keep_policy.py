"""Which Compress variant is kept, and why each of the others is not: the cheapest within a tolerance of the best
quality, never one across a red line. Pure and torch-free, so that the policy is tested, and explained, on
numbers alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from reverie.config import KeepPolicy

if TYPE_CHECKING:  # only the attributes are read: importing front.py would import torch
    from reverie.engines.front import Measurement

RED_LINE_AXES = {"knowledge": "accuracy", "reasoning": "reasoning_accuracy", "diversity": "distinct_2"}
SLACK = 1e-9  # measured numbers are compared with this much room for float rounding
Speed = Callable[[str], float]  # a name -> its batch-1 tokens/s relative to the reference, as the policy counts it


@dataclass(frozen=True)
class Decision:
    kept: str  # a variant's name, or the reference's when no variant qualifies
    reasons: dict[str, str]  # every name, the reference's included -> why it was kept or not


def choose(reference: tuple[str, Measurement], variants: list[tuple[str, Measurement]],
           policy: KeepPolicy, saves_nothing: frozenset[str] = frozenset()) -> Decision:
    """Keep the cheapest variant among those within tolerance of the best quality.

    A variant across a red line (a drop from the reference larger than policy.red_lines allows) is out. Among the
    rest, the reference included, those within policy.accuracy_tolerance of the best accuracy and within
    policy.perplexity_tolerance (relative) of the best perplexity are eligible. Cheapest is the highest batch-1
    decode tokens/s, where a speed within policy.min_speedup of the reference, either way, counts as the
    reference's own: measurement noise is not a saving. The variants in `saves_nothing` (sparse weights stored
    densely) count as the reference's speed whatever was measured, since their format cannot save time. Ties go to higher accuracy, then lower perplexity, then
    fewer bytes on disk, then the reference (keeping nothing new for nothing)."""
    reference_name, base = reference
    measured = dict([reference, *variants])
    if len(measured) != len(variants) + 1:
        raise ValueError(f"variant names must be unique and differ from the reference's: {[n for n, _ in variants]}")
    reasons = {name: "; ".join(crossed) for name, m in variants if (crossed := red_lines_crossed(base, m, policy))}
    standing = {name: m for name, m in measured.items() if name not in reasons}
    best_accuracy = max(m.quality["accuracy"] for m in standing.values())
    best_perplexity = min((p for m in standing.values() if math.isfinite(p := m.quality["perplexity"])),
                          default=math.inf)
    for name, m in standing.items():
        if short := _short_of_best(m, best_accuracy, best_perplexity, policy):
            reasons[name] = short
    eligible = [name for name in standing if name not in reasons]
    if not eligible:  # the best accuracy and the best perplexity belong to different variants, far apart
        reasons[reference_name] = ("kept: no variant qualified (none is within tolerance of the best accuracy and "
                                   "the best perplexity at once)")
        return Decision(reference_name, reasons)

    def speed(name: str) -> float:
        if name in saves_nothing:
            return 1.0
        ratio = _ratio(measured[name], base)
        return 1.0 if 1 / policy.min_speedup + SLACK < ratio < policy.min_speedup - SLACK else ratio

    def rank(name: str) -> tuple[float, float, float, float]:
        m = measured[name]
        return -speed(name), -m.quality["accuracy"], m.quality["perplexity"], m.cost.get("disk_bytes", 0.0)

    winner, *others = sorted(eligible, key=rank)  # stable: the reference (first in `measured`) wins exact ties
    for name in others:
        reasons[name] = _not_kept(name, winner, reference_name, measured, speed, policy, saves_nothing)
    reasons[winner] = _kept(winner, reference_name, measured, speed)
    return Decision(winner, reasons)


def red_lines_crossed(base: Measurement, variant: Measurement, policy: KeepPolicy) -> list[str]:
    """What the variant dropped past a red line, in words (empty: none). An axis one of them lacks is not judged."""
    crossed = []
    for axis, limit in policy.red_lines.items():
        metric = RED_LINE_AXES[axis]
        if metric in base.quality and metric in variant.quality:
            before, after = base.quality[metric], variant.quality[metric]
            if not before - after <= limit + SLACK:  # NaN crosses too
                crossed.append(f"across the {axis} red line: {before:.3f} -> {after:.3f} (max drop {limit:g})")
    return crossed


def _short_of_best(m: Measurement, best_accuracy: float, best_perplexity: float, policy: KeepPolicy) -> str:
    accuracy, perplexity = m.quality["accuracy"], m.quality["perplexity"]
    if not accuracy >= best_accuracy - policy.accuracy_tolerance - SLACK:
        return (f"not within tolerance of the best quality: accuracy {accuracy:.3f} vs best {best_accuracy:.3f} "
                f"(compress.keep.accuracy_tolerance {policy.accuracy_tolerance:g})")
    if not perplexity <= best_perplexity * (1 + policy.perplexity_tolerance) + SLACK:
        return (f"not within tolerance of the best quality: perplexity {perplexity:.3f} vs best {best_perplexity:.3f}, "
                f"{perplexity / best_perplexity - 1:+.1%} (compress.keep.perplexity_tolerance "
                f"{policy.perplexity_tolerance:g})")
    return ""


def _ratio(m: Measurement, base: Measurement) -> float:
    """Batch-1 decode tokens/s relative to the reference."""
    return m.cost["tokens_per_s_b1"] / base.cost["tokens_per_s_b1"]


def _kept(winner: str, reference: str, measured: dict[str, Measurement], speed: Speed) -> str:
    if winner == reference:
        return "kept: no variant qualified (each one's reason says why)"
    m, base = measured[winner], measured[reference]
    ratio = _ratio(m, base)
    if speed(winner) > 1.0:
        return (f"kept: the cheapest within tolerance of the best quality: {ratio:.2f}x tokens/s, accuracy "
                f"{base.quality['accuracy']:.3f} -> {m.quality['accuracy']:.3f}")
    return f"kept: as fast as the reference ({ratio:.2f}x tokens/s) and it {_better(m, base)}"


def _not_kept(name: str, winner: str, reference: str, measured: dict[str, Measurement], speed: Speed,
              policy: KeepPolicy, saves_nothing: frozenset[str]) -> str:
    m, ratio = measured[name], _ratio(measured[name], measured[reference])
    if name == reference:
        return (f"the reference: {winner} is within tolerance of the best quality and "
                f"{_cheaper(winner, name, measured, speed)}")
    if name in saves_nothing:
        return (f"stored densely, it saves no bytes or time here: not counted as a saving (measured {ratio:.2f}x "
                f"tokens/s)" + (f", and {winner} {_cheaper(winner, name, measured, speed)}" if winner != reference
                                else ""))
    if speed(name) == 1.0 and ratio > 1 / policy.min_speedup:
        return (f"not faster here: {ratio:.2f}x tokens/s (compress.keep.min_speedup {policy.min_speedup:g}); not "
                f"counted as a saving" + (f", and {winner} {_better(measured[winner], m)}"
                                          if speed(winner) == 1.0 else ""))
    if ratio < 1:
        return f"slower here: {ratio:.2f}x tokens/s of the reference"
    return f"within tolerance, but {winner} {_cheaper(winner, name, measured, speed)}"


def _cheaper(winner: str, loser: str, measured: dict[str, Measurement], speed: Speed) -> str:
    if speed(winner) > speed(loser):
        return f"is faster: {speed(winner):.2f}x vs {speed(loser):.2f}x tokens/s of the reference"
    return f"is as fast and {_better(measured[winner], measured[loser])}"


def _better(m: Measurement, other: Measurement) -> str:
    """How `m` won a tie on speed: the first tie-breaker that told them apart."""
    if m.quality["accuracy"] != other.quality["accuracy"]:
        return f"is more accurate ({m.quality['accuracy']:.3f} vs {other.quality['accuracy']:.3f})"
    if m.quality["perplexity"] != other.quality["perplexity"]:
        return f"has lower perplexity ({m.quality['perplexity']:.3f} vs {other.quality['perplexity']:.3f})"
    mine, theirs = m.cost.get("disk_bytes", 0.0), other.cost.get("disk_bytes", 0.0)
    if mine != theirs:
        return f"is smaller on disk ({mine / 1e6:.1f} vs {theirs / 1e6:.1f} MB)"
    return "measured the same (the reference wins a tie)"
