"""Compress by distilling: the seed's distill(teacher=chkpt_best, student=current_model). The teacher is the
release (compress.distil.teacher), the student the candidate through a fresh LoRA (or compress.distil.student, a
smaller model trained in full); the data is the cycle's general rows (what data.mix drew from the pool for Learn),
so that the student wins back general behaviour without being pulled off the new knowledge, which the knowledge
red line guards."""

from __future__ import annotations

from reverie.data.knowledge import Example
from reverie.data.pool import draw_for_learn
from reverie.engines.distillation import distil
from reverie.engines.models import LoadedModel, attach_lora, load_pretrained, resolve_source, store_weights
from reverie.errors import ReverieError
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import COMPRESS, StrategyResult, register
from reverie.phases.strategies.compression import (FrontMeter, Proposal, keep_by_policy, loaded_float,
                                                   parameter_bytes)
from reverie.registry import RELEASE_ALIAS, ModelRecord


@register(COMPRESS, "distil")
class Distil:
    name: str

    def run(self, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult:
        ws = ctx.workspace
        settings = ws.config.compress.distil
        examples = general_rows(ctx)  # distil() takes the first compress.distil.rows
        if not examples:
            return keep_by_policy(ctx, self.name, candidate, [], {}, no_variant_reason=(
                "no general rows to distil on: Learn drew none from the data pool (set learn.pool_records and "
                "ingest data with `reverie data ingest`)"))
        teacher_record = teacher(ctx)
        if teacher_record.id == candidate.id:
            return keep_by_policy(ctx, self.name, candidate, [], {},
                                  no_variant_reason="the teacher is the candidate itself: nothing to distil")
        teacher_model = loaded_float(ctx, teacher_record)
        student = self.student(ctx, candidate)
        report = distil(student.model, teacher_model.model, student.tokenizer, examples, settings,
                        f"compress: distil from {teacher_record.id}")
        if not settings.student:
            student.model = student.model.merge_and_unload()
        student.model.eval()
        name = "distilled" if not settings.student else "distilled-student"
        measured = FrontMeter.of(ctx).measure(student, parameter_bytes(student))
        proposal = Proposal(name, "safetensors", measured,
                            store=lambda: store_weights(ws, student.model, student.tokenizer),
                            metrics={"kl_before": report.kl_before, "kl_after": report.kl_after,
                                     "steps": float(report.steps)})
        return keep_by_policy(ctx, self.name, candidate, [proposal], {})

    def student(self, ctx: PhaseContext, candidate: ModelRecord) -> LoadedModel:
        config = ctx.workspace.config
        if config.compress.distil.student:
            path = resolve_source(config.compress.distil.student, ctx.workspace.cache_dir, ctx.workspace.root)
            loaded = load_pretrained(path, config.model)
            loaded.model.requires_grad_(True)
            return loaded
        loaded = loaded_float(ctx, candidate)
        loaded.model = attach_lora(loaded.model, config.learn.lora, config.learn.train.seed)
        return loaded


def general_rows(ctx: PhaseContext) -> list[Example]:
    """The rows data.mix drew from the pool for this cycle's Learn (same seed, same frozen datasets)."""
    return draw_for_learn(ctx.workspace, ctx.inputs.draw_seed, ctx.inputs.pool).examples


def teacher(ctx: PhaseContext) -> ModelRecord:
    registry, spec = ctx.workspace.registry, ctx.workspace.config.compress.distil.teacher
    model_id = registry.get_alias(RELEASE_ALIAS) if spec == "release" else spec
    if model_id is None:
        raise ReverieError("compress.distil.teacher is 'release' but the workspace has no release yet")
    try:
        return registry.get_model(model_id)
    except (KeyError, ReverieError):
        raise ReverieError(f"compress.distil.teacher: no model {model_id!r} in the registry "
                           "(use 'release' or an id from `reverie models`)") from None

