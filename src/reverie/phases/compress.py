"""Compress: merge the Learn adapter into the weights, kept only when the A/B check on the eval set passes.

Every variant it measured (adapter, merged) is recorded with its quality (probe accuracy) and cost (seconds for
one forward pass over the probe prompts): the dashboard draws their Pareto front."""

from __future__ import annotations

from reverie.engines.merging import merge_with_ab_check
from reverie.engines.models import load_version, store_weights
from reverie.memory.store import cycle_knowledge
from reverie.phases.base import PhaseContext, PhaseResult


class Compress:
    name = "compress"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        config = ctx.workspace.config
        candidate = ctx.candidate()
        if not candidate.adapter or not config.compress.merge:
            reason = "no adapter to merge" if not candidate.adapter else "compress.merge is off"
            return PhaseResult(outputs={"model": candidate.id, "merged": False, "reason": reason})

        knowledge = cycle_knowledge(ctx.workspace)
        probe = [(qa.question, qa.answer) for _, qa in knowledge.eval_items()]
        loaded = load_version(ctx.workspace, candidate)
        check = merge_with_ab_check(
            loaded.model, loaded.tokenizer, probe, config.compress.max_logit_diff,
            config.eval.max_new_tokens, config.eval.batch_size,
        )
        metrics = {
            "merge_max_logit_diff": check.max_logit_diff,
            "adapter_accuracy": check.adapter_accuracy,
            "merged_accuracy": check.merged_accuracy,
        }
        merged = check.merged is not None
        variants = [
            {"name": "adapter", "accuracy": check.adapter_accuracy, "seconds": check.adapter_seconds,
             "kept": not merged},
            {"name": "merged", "accuracy": check.merged_accuracy, "seconds": check.merged_seconds, "kept": merged},
        ]
        if not merged:
            return PhaseResult(outputs={"model": candidate.id, "merged": False, "reason": "A/B check failed",
                                        "variants": variants}, metrics=metrics)
        weights = store_weights(ctx.workspace, check.merged, loaded.tokenizer)
        model = ctx.new_model(candidate, self.name, weights=weights, adapter=None, source=None)
        return PhaseResult(outputs={"model": model.id, "merged": True, "artifacts": [weights], "variants": variants},
                           metrics=metrics, new_models=[model])
