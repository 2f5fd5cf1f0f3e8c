"""The Gate's decision, from suite reports: dual thresholds (capability and alignment floors), red lines,
and regression alarms against the current release judged by a paired confidence interval.

Pure and deterministic (the intervals are seeded), so the same reports always give the same verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reverie.config import GateConfig
from reverie.engines.suites import SuiteReport
from reverie.metrics import higher_is_better
from reverie.stats import Interval, paired_difference_ci


@dataclass
class Verdict:
    release: bool
    reasons: list[str]  # every failed check; empty on release
    notes: list[str] = field(default_factory=list)  # drops inside the noise, and other things a reader should see
    overridable: bool = True  # false when a red line is crossed


def _value(reports: dict[str, SuiteReport], metric: str) -> float | None:
    suite, name = metric.split(".", 1)
    return reports[suite].means().get(name) if suite in reports else None


def _bound_check(reports: dict[str, SuiteReport], metric: str, bound: float, kind: str) -> str | None:
    value = _value(reports, metric)
    if value is None:
        return f"{kind}: {metric} has no items to score"
    if higher_is_better(metric) and value < bound:
        return f"{kind}: {metric} {value:.3f} is below the floor {bound:.3f}"
    if not higher_is_better(metric) and value > bound:
        return f"{kind}: {metric} {value:.3f} is above the ceiling {bound:.3f}"
    return None


def _interval_check(reports: dict[str, SuiteReport], metric: str, bound: float, confidence: float) -> str | None:
    suite, name = metric.split(".", 1)
    interval = reports[suite].summary(confidence).get(name) if suite in reports else None
    if interval is None or interval.n == 0:
        return f"interval floor: {metric} has no items to score"
    if interval.low < bound:
        return (f"interval floor: {metric} {interval.mean:.3f} ({confidence:.0%} CI {interval.low:.3f} to "
                f"{interval.high:.3f}, {interval.n} items) is not above {bound:.3f} beyond the noise")
    return None


def regression(candidate: SuiteReport, reference: SuiteReport, metric: str, confidence: float) -> Interval:
    """The candidate's loss against the reference on their shared items (positive = worse), with its interval."""
    name = metric.split(".", 1)[1]
    ours, theirs = candidate.values(name), reference.values(name)
    shared = sorted(ours.keys() & theirs.keys())
    sign = 1 if higher_is_better(metric) else -1
    return paired_difference_ci([sign * ours[i] for i in shared], [sign * theirs[i] for i in shared], confidence)


def decide(candidate: dict[str, SuiteReport], reference: dict[str, SuiteReport], gate: GateConfig,
           reference_id: str) -> Verdict:
    reasons, notes = [], []
    for kind, bounds in (("capability", gate.capability), ("alignment", gate.alignment)):
        reasons += [r for m, b in bounds.items() if (r := _bound_check(candidate, m, b, kind))]
    red = [r for m, b in gate.red_lines.items() if (r := _bound_check(candidate, m, b, "red line"))]
    reasons += [r for m, b in gate.interval_floors.items() if (r := _interval_check(candidate, m, b, gate.confidence))]
    for metric, margin in gate.max_regression.items():
        suite = metric.split(".", 1)[0]
        drop = regression(candidate[suite], reference[suite], metric, gate.confidence)
        if drop.n == 0:
            continue
        interval = f"{drop.mean:+.3f} ({gate.confidence:.0%} CI {drop.low:+.3f} to {drop.high:+.3f}, {drop.n} items)"
        if drop.mean > margin and drop.low > 0:
            reasons.append(f"regression: {metric} fell by {interval} against {reference_id} (allowed {margin:.3f})")
        elif drop.mean > 0:
            notes.append(f"{metric} fell by {interval} against {reference_id}: not a regression "
                         + ("(inside the noise)" if drop.low <= 0 else f"(within the allowed {margin:.3f})"))
    return Verdict(release=not (reasons or red), reasons=red + reasons, notes=notes, overridable=not red)
