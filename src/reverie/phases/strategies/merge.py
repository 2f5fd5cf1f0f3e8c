"""Compress by merging: the Learn adapter is merged into the weights, kept only when the A/B check (logits and
probe accuracy) passes. Both versions go on the front, measured like every other variant: the server merges an
adapter when it loads one, so they run at one speed and differ in what they keep on disk. An adapter on a
quantized release is merged and stored quantized again, as the release was (base.store_like)."""

from __future__ import annotations

from reverie.engines.models import load_version
from reverie.phases.base import PhaseContext
from reverie.phases.outputs import StrategyOutcome
from reverie.phases.strategies.base import COMPRESS, StrategyResult, merge_or_keep_adapter, register
from reverie.phases.strategies.compression import REFERENCE, FrontMeter, format_of, variant
from reverie.registry import ModelRecord


@register(COMPRESS, "merge")
class Merge:
    name: str

    def run(self, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult:
        if not candidate.adapter:
            return StrategyResult(StrategyOutcome(strategy=self.name, kept=False, reason="no adapter to merge"))
        meter = FrontMeter.of(ctx)
        before = meter.reference(candidate)
        loaded = load_version(ctx.workspace, candidate)
        kept = merge_or_keep_adapter(ctx, candidate, loaded, "compress", candidate.datasets, merge=True,
                                     keep_adapter=False)
        check = kept.check
        assert check is not None  # merge=True always checks
        metrics = {"merge_max_logit_diff": check.max_logit_diff, "adapter_accuracy": check.adapter_accuracy,
                   "merged_accuracy": check.merged_accuracy}
        verdict = (f"A/B check: max logit change {check.max_logit_diff:.2g}, probe accuracy "
                   f"{check.adapter_accuracy:.3f} -> {check.merged_accuracy:.3f}")
        meter.placed.add(candidate.id)
        variants = [variant(REFERENCE, self.name, format_of(ctx, candidate), before, kept.model is None,
                            "kept: the merge failed its A/B check" if kept.model is None else "merged into the weights",
                            candidate.id)]
        if kept.model is not None:
            after = meter.reference(kept.model)
            meter.placed.add(kept.model.id)
            variants.append(variant("merged", self.name, format_of(ctx, kept.model), after, True,
                                    f"kept: {verdict} passed", kept.model.id))
        reason = f"merged: {verdict} passed" if kept.model else f"{verdict} failed"
        outcome = StrategyOutcome(strategy=self.name, kept=kept.model is not None, reason=reason,
                                  model=kept.model.id if kept.model else None, weights=kept.weights,
                                  variants=variants)
        return StrategyResult(outcome, metrics, [kept.model] if kept.model else [])
