"""Live figures of a served model (errors, refusals, thumbs-down, latency) with their intervals, and the judgement of
one model against another on them: what the canary and the release alarm decide on (serving/canary.py)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from reverie.config import LiveThresholds
from reverie.engines.refusal import is_refusal
from reverie.registry import LiveCounts
from reverie.stats import Interval, rate_difference_interval, wilson_interval

LATENCY_WINDOW = 1000  # latest answers the p95 latency is read over


class ArmStats:
    """One model's live counts, continued from those recorded for it, and its latest latencies."""

    def __init__(self, counts: LiveCounts):
        self.counts = counts
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.dirty = False  # changed since it was last saved

    def answered(self, seconds: float, text: str) -> None:
        self.counts.requests += 1
        self.counts.refusals += is_refusal(text)
        self.counts.latency_sum += seconds
        self.latencies.append(seconds)
        self.counts.latency_p95 = sorted(self.latencies)[int(0.95 * (len(self.latencies) - 1))]
        self._touch()

    def failed(self) -> None:
        self.counts.requests += 1
        self.counts.errors += 1
        self._touch()

    def rated_down(self) -> None:
        self.counts.thumbs_down += 1
        self._touch()

    def _touch(self) -> None:
        self.counts.updated_at = time.time()
        self.dirty = True


def answers(counts: LiveCounts) -> int:
    return counts.requests - counts.errors


def figures(counts: LiveCounts, confidence: float) -> dict:
    """The figures one arm shows (the endpoint, the dashboard, a decision's record): rates with Wilson intervals."""
    def rate(hits: int, n: int) -> dict:
        interval = wilson_interval(hits, n, confidence)
        return {"value": None if not n else interval.mean, "low": interval.low, "high": interval.high}

    given = answers(counts)
    return {"model": counts.model_id, "requests": counts.requests, "errors": counts.errors,
            "error_rate": rate(counts.errors, counts.requests), "refusal_rate": rate(counts.refusals, given),
            "thumbs_down_rate": rate(counts.thumbs_down, given),
            "latency_mean_s": counts.latency_sum / given if given else None,
            "latency_p95_s": counts.latency_p95 if given else None}


Verdict = Literal["worse", "not worse", "undecided"]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reasons: list[str]  # worse: each threshold crossed; otherwise what is still open, or that all are met
    breached: bool  # a point estimate is past a threshold: what the interval, and min_requests, must then confirm


@dataclass(frozen=True)
class Check:
    name: str
    interval: Interval
    limit: float
    setting: str


def checks(arm: LiveCounts, against: LiveCounts, thresholds: LiveThresholds) -> list[Check]:
    """The error rate against its cap; the refusal and thumbs-down rates as a rise over the other arm's."""
    confidence = thresholds.confidence
    return [
        Check("error rate", wilson_interval(arm.errors, arm.requests, confidence), thresholds.max_error_rate,
              "max_error_rate"),
        Check("refusal rate rise", rate_difference_interval((arm.refusals, answers(arm)),
                                                            (against.refusals, answers(against)), confidence),
              thresholds.max_refusal_increase, "max_refusal_increase"),
        Check("thumbs-down rate rise", rate_difference_interval((arm.thumbs_down, answers(arm)),
                                                                (against.thumbs_down, answers(against)), confidence),
              thresholds.max_thumbs_down_increase, "max_thumbs_down_increase"),
    ]


def judge(arm: LiveCounts, against: LiveCounts, thresholds: LiveThresholds, min_requests: int) -> Judgement:
    """`arm` against `against`: worse when a check's interval lies wholly above its limit, not worse when every
    interval lies at or below it; undecided before `min_requests` answers or while an interval straddles a limit."""
    found = checks(arm, against, thresholds)
    breached = any(check.interval.n and check.interval.mean > check.limit for check in found)
    if arm.requests < min_requests:
        return Judgement("undecided", [f"{arm.requests} of {min_requests} requests so far"], breached)
    worse = [f"{c.name} {c.interval.mean:+.3f} (interval {c.interval.low:.3f} to {c.interval.high:.3f}) is above "
             f"serve.live_thresholds.{c.setting} {c.limit:g}" for c in found if c.interval.low > c.limit]
    if worse:
        return Judgement("worse", worse, breached)
    open_ = [f"{c.name}: interval up to {c.interval.high:.3f} reaches past {c.limit:g}" for c in found
             if c.interval.high > c.limit]
    if open_:
        return Judgement("undecided", open_, breached)
    return Judgement("not worse", [f"every interval within serve.live_thresholds after {arm.requests} requests"],
                     breached)
