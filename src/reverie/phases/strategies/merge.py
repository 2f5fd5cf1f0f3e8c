"""Compress by merging: the candidate's adapters are folded into the weights, `compress.merge_batch` at a time,
each batch kept only when the A/B check (logits and probe accuracy against every adapter running unmerged)
passes; a failing batch stops the merge and the last good state is kept, its unmerged adapters still stacked on
top. One adapter is one batch. Both versions go on the front: the server merges an adapter when it loads one,
so in float they run at one speed and differ in what they keep on disk (merged_measurement). The merged
weights are stored the way the candidate's were (base.store_like: a quantized release stays quantized)."""

from __future__ import annotations

from dataclasses import dataclass

from reverie.data.splits import knowledge_probe
from reverie.engines.front import Measurement
from reverie.engines.merging import ABCheck, ProbeOutputs, ab_check, probe_outputs, stacked_model
from reverie.engines.models import LoadedModel, gguf_weights, load_pretrained, weights_dir
from reverie.phases.base import PhaseContext
from reverie.phases.outputs import StrategyOutcome
from reverie.phases.strategies.base import COMPRESS, StrategyResult, register, store_like
from reverie.phases.strategies.compression import REFERENCE, FrontMeter, format_of, model_bytes, variant
from reverie.progress import status_line
from reverie.registry import ModelRecord


@dataclass
class BatchedMerge:
    """How far the merge got: how many adapters of the stack (oldest first) are folded into the weights, each
    batch's check, and the batch that failed, if one did."""

    merged: int
    checks: list[ABCheck]
    failed: ABCheck | None = None


@register(COMPRESS, "merge")
class Merge:
    name: str

    def run(self, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult:
        if not candidate.adapter:
            return StrategyResult(StrategyOutcome(strategy=self.name, kept=False, reason="no adapter to merge"))
        meter = FrontMeter.of(ctx)
        before = meter.reference(candidate)
        adapters = [*candidate.stack, candidate.adapter]
        result = merge_in_batches(ctx, candidate, adapters)
        metrics = {f"batch{i}_max_logit_diff": c.max_logit_diff for i, c in enumerate(result.checks, 1)}
        metrics |= {"merged_adapters": float(result.merged), "stacked_adapters": float(len(adapters))}
        last = result.failed or result.checks[-1]
        metrics |= {"merge_max_logit_diff": last.max_logit_diff, "adapter_accuracy": last.before_accuracy,
                    "merged_accuracy": last.after_accuracy}
        verdict = describe(result, len(adapters), ctx.workspace.config.compress.merge_batch)
        meter.placed.add(candidate.id)
        variants = [variant(REFERENCE, self.name, format_of(ctx, candidate), before, not result.merged,
                            f"kept: {verdict}" if not result.merged else "merged into the weights", candidate.id)]
        if not result.merged:
            outcome = StrategyOutcome(strategy=self.name, kept=False, reason=verdict, variants=variants)
            return StrategyResult(outcome, metrics)
        model = store_merged(ctx, candidate, adapters, result.merged)
        after = merged_measurement(ctx, meter, candidate, model, before)
        meter.placed.add(model.id)
        variants.append(variant("merged", self.name, format_of(ctx, model), after, True, f"kept: {verdict}",
                                model.id))
        outcome = StrategyOutcome(strategy=self.name, kept=True, reason=verdict, model=model.id,
                                  weights=model.weights, adapter=model.adapter, variants=variants)
        return StrategyResult(outcome, metrics, [model])


def merge_in_batches(ctx: PhaseContext, candidate: ModelRecord, adapters: list[str]) -> BatchedMerge:
    """Fold the adapters in batches, each state checked against the whole stack running unmerged (not against the
    batch before), so that small changes cannot add up past the tolerance."""
    config = ctx.workspace.config
    paths = [ctx.workspace.artifacts.path(a) for a in adapters]
    probe = knowledge_probe(ctx.inputs.knowledge)

    def outputs(merged: int) -> ProbeOutputs:
        base = load_float_weights(ctx, candidate)
        model = stacked_model(base.model, paths[:merged], paths[merged:])
        return probe_outputs(model, base.tokenizer, probe, config.eval.max_new_tokens, config.eval.batch_size)

    reference = outputs(0)
    result = BatchedMerge(merged=0, checks=[])
    batch = config.compress.merge_batch
    for start in range(0, len(adapters), batch):
        end = min(start + batch, len(adapters))
        status_line(f"compress: merging adapters {start + 1}-{end} of {len(adapters)}")
        check = ab_check(reference, outputs(end), config.compress.max_logit_diff)
        if not check.passed:
            result.failed = check
            break
        result.checks.append(check)
        result.merged = end
    return result


def merged_measurement(ctx: PhaseContext, meter: FrontMeter, candidate: ModelRecord, model: ModelRecord,
                       before: Measurement) -> Measurement:
    """The merged version's place on the front. Stored in float like the candidate, it runs as the candidate was
    measured (with its adapters merged in memory, as the server loads one) and the A/B check found the same
    function, so only its bytes on disk are measured again; a merge stored as GGUF runs elsewhere and is measured."""
    if gguf_weights(ctx.workspace, candidate) is not None:
        return meter.reference(model)
    after = Measurement(dict(before.quality), before.cost | {"disk_bytes": float(model_bytes(ctx, model))},
                        before.energy)
    meter.measured[model.id] = after
    return after


def load_float_weights(ctx: PhaseContext, record: ModelRecord) -> LoadedModel:
    """The version's weights without any adapter (a GGUF dequantized), fresh: a merge changes them in place."""
    return load_pretrained(weights_dir(ctx.workspace, record), ctx.workspace.config.model)


def store_merged(ctx: PhaseContext, candidate: ModelRecord, adapters: list[str], merged: int) -> ModelRecord:
    """The new version: the first `merged` adapters in its weights, the rest still stacked on top."""
    base = load_float_weights(ctx, candidate)
    model = stacked_model(base.model, [ctx.workspace.artifacts.path(a) for a in adapters[:merged]], [])
    weights = store_like(ctx.workspace, candidate, model, base.tokenizer)
    rest = adapters[merged:]
    return ctx.new_model(candidate, "compress", weights=weights, source=None, adapter=rest[-1] if rest else None,
                         stack=rest[:-1])


def describe(result: BatchedMerge, total: int, batch: int) -> str:
    """The outcome's reason: what was merged, every check's figures, and the failing batch's."""
    def figures(check: ABCheck) -> str:
        return (f"max logit change {check.max_logit_diff:.2g}, probe accuracy {check.before_accuracy:.3f} -> "
                f"{check.after_accuracy:.3f}")

    if total == 1:  # one adapter, one check
        check = result.failed or result.checks[0]
        return f"{'' if result.failed else 'merged: '}A/B check: {figures(check)} {'failed' if result.failed else 'passed'}"
    checks = "; ".join(f"batch {i}: {figures(c)}" for i, c in enumerate(result.checks, 1))
    done = f"merged {result.merged} of {total} adapters in batches of {batch}" + (f" ({checks})" if checks else "")
    if result.failed is None:
        return f"{done}: every A/B check passed"
    failed = f"A/B check of batch {len(result.checks) + 1} failed ({figures(result.failed)})"
    return f"{done}; {failed}, so the last good state is kept" if result.merged else f"{failed}: nothing merged"
