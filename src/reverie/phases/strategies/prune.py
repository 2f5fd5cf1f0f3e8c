"""Compress by pruning: Wanda unstructured and 2:4 sparsity, scored on activations of this cycle's training
examples, and the removal of whole decoder layers; each variant measured on the front beside the candidate.

Sparse weights stored densely save neither bytes nor time here, and the front shows that; removing layers is the
variant that shrinks compute. Recovery (compress.prune.recovery_steps) trains a LoRA on the training examples
and merges it, so it is applied to removed layers only: merging would refill the zeros of a sparse matrix."""

from __future__ import annotations

from reverie.config import PruneMethod
from reverie.engines.models import LoadedModel, attach_lora, store_weights
from reverie.engines.pruning import PruneReport, calibration_batches, drop_layers, wanda_prune
from reverie.engines.training import train_sft
from reverie.errors import ReverieError
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import COMPRESS, StrategyResult, register
from reverie.phases.strategies.compression import (FrontMeter, Proposal, keep_by_policy, loaded_float,
                                                   parameter_bytes, training_examples)
from reverie.registry import ModelRecord


@register(COMPRESS, "prune")
class Prune:
    name: str

    def run(self, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult:
        ws = ctx.workspace
        settings = ws.config.compress.prune
        examples = training_examples(ctx)
        meter = FrontMeter.of(ctx)
        proposals, skipped = [], []
        for method in settings.methods:
            loaded = loaded_float(ctx, candidate)
            calibration = calibration_batches(loaded.tokenizer, examples, settings.calibration_rows,
                                              ws.config.learn.train.block_size)
            try:
                report = prune(loaded, calibration, method, ctx)
            except ReverieError as exc:  # e.g. no layer left to remove from an already small model
                skipped.append(f"{method} skipped: {exc}")
                continue
            if method == "layers" and settings.recovery_steps:
                recover(ctx, loaded, examples)
            measured = meter.measure(loaded, parameter_bytes(loaded))
            proposals.append(Proposal(report_name(report, method), "safetensors", measured,
                                      store=lambda loaded=loaded: store_weights(ws, loaded.model, loaded.tokenizer),
                                      metrics={"sparsity": report.sparsity, "parameters": float(report.parameters_after),
                                               "layers_removed": float(len(report.layers))},
                                      saves_nothing=method != "layers"))
        result = keep_by_policy(ctx, self.name, candidate, proposals, {}, no_variant_reason="; ".join(skipped))
        if skipped and proposals:
            result.outcome = result.outcome.model_copy(
                update={"reason": "; ".join([result.outcome.reason, *skipped])})
        return result


def prune(loaded: LoadedModel, calibration: list, method: PruneMethod, ctx: PhaseContext) -> PruneReport:
    settings = ctx.workspace.config.compress.prune
    if method == "layers":
        return drop_layers(loaded.model, calibration, settings.drop_layers)
    return wanda_prune(loaded.model, calibration, settings.sparsity, "unstructured" if method == "wanda" else "2:4")


def recover(ctx: PhaseContext, loaded: LoadedModel, examples: list) -> None:
    """A short LoRA fine-tune on the training examples, merged back: at most recovery_steps optimizer steps."""
    config = ctx.workspace.config
    settings = config.compress.prune
    lora = attach_lora(loaded.model, config.learn.lora, config.learn.train.seed)
    rows = settings.recovery_steps * config.learn.train.rows_per_step
    train_sft(lora, loaded.tokenizer, examples[:rows], config.learn.train.model_copy(update={"epochs": 1, "pack": False}),
              "compress: recovery after pruning")
    loaded.model = lora.merge_and_unload()


def report_name(report: PruneReport, method: PruneMethod) -> str:
    if method == "layers":
        return f"drop-{len(report.layers)}-layers"
    return "2:4" if method == "2:4" else f"wanda-{report.sparsity:.2f}"

