"""The forgetting check's power: how likely the general suite's paired items are to see a 2-point drop between
two versions, from the share of items that flip between them. Said in `reverie eval` and on the model card."""

from __future__ import annotations

from reverie.engines.suites.base import SuiteReport
from reverie.stats import PRIOR_FLIP_RATE, flip_rate, paired_items_needed, paired_power

FORGETTING_METRIC = "general.accuracy"
DETECTED_DROP = 0.02  # the drop the forgetting check is sized to see
TARGET_POWER = 0.8


def forgetting_power_line(report: SuiteReport, reference: SuiteReport | None, confidence: float) -> str:
    """The forgetting check's power to see a 2-point drop, from the flip rate between the two versions compared
    (or the PIQA prior when there is one version), and the paired items that power 0.8 needs."""
    ours = report.values("accuracy")
    theirs = reference.values("accuracy") if reference is not None else {}
    shared = sorted(ours.keys() & theirs.keys())
    if shared:
        flips = flip_rate([theirs[i] for i in shared], [ours[i] for i in shared])
        source = f"flip rate {flips:.1%} measured on the {len(shared)} items both versions answered"
    else:
        flips = PRIOR_FLIP_RATE
        source = (f"flip rate {flips:.0%} assumed (between two versions on PIQA; pass --against to measure it "
                  "for this pair)")
    n = len(shared) or len(ours)
    if flips <= 0:
        return f"{FORGETTING_METRIC}: no item changed between the two versions, so no drop to detect ({source})"
    power = paired_power(DETECTED_DROP, n, flips, confidence)
    needed = paired_items_needed(DETECTED_DROP, flips, TARGET_POWER, confidence)
    return (f"{FORGETTING_METRIC}: {n} paired items see a {DETECTED_DROP * 100:.0f}-point drop with power "
            f"{power:.2f} ({source}); power {TARGET_POWER} needs {needed} items (eval.general_limit)")
