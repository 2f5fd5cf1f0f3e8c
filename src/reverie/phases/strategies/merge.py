"""Compress by merging: the Learn adapter is merged into the weights, kept only when the A/B check passes.

Both variants it measured (adapter, merged) are recorded with their quality (probe accuracy) and cost (seconds
for one forward pass over the probe prompts): the dashboard draws their Pareto front."""

from __future__ import annotations

from reverie.engines.models import load_version
from reverie.phases.base import PhaseContext
from reverie.phases.outputs import StrategyOutcome
from reverie.phases.strategies.base import COMPRESS, StrategyResult, merge_or_keep_adapter, merge_variants, register
from reverie.registry import ModelRecord


@register(COMPRESS, "merge")
class Merge:
    name: str

    def run(self, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult:
        if not candidate.adapter:
            return StrategyResult(StrategyOutcome(strategy=self.name, kept=False, reason="no adapter to merge"))
        loaded = load_version(ctx.workspace, candidate)
        kept = merge_or_keep_adapter(ctx, candidate, loaded, "compress", candidate.datasets, merge=True,
                                     keep_adapter=False)
        check = kept.check
        assert check is not None  # merge=True always checks
        metrics = {"merge_max_logit_diff": check.max_logit_diff, "adapter_accuracy": check.adapter_accuracy,
                   "merged_accuracy": check.merged_accuracy}
        reason = "merged: the A/B check passed" if kept.model else "A/B check failed"
        outcome = StrategyOutcome(strategy=self.name, kept=kept.model is not None, reason=reason,
                                  model=kept.model.id if kept.model else None, weights=kept.weights,
                                  variants=merge_variants(check))
        return StrategyResult(outcome, metrics, [kept.model] if kept.model else [])
