"""Compress by quantizing: the candidate written as GGUF and quantized to each of compress.quantize.formats,
every file run by llama.cpp and measured on the front beside the candidate; compress.keep picks one.

A format that is not faster here is reported as such (the policy's min_speedup), not counted as a saving."""

from __future__ import annotations

from reverie.engines.gguf_export import quantize_gguf, write_gguf
from reverie.engines.llama_cpp_runtime import LlamaCppModel
from reverie.engines.models import LoadedModel, load_tokenizer, merged_weights_dir, store_gguf
from reverie.errors import ReverieError
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import COMPRESS, StrategyResult, register
from reverie.phases.strategies.compression import FrontMeter, Proposal, keep_by_policy, scratch_dir
from reverie.registry import ModelRecord


@register(COMPRESS, "quantize")
class Quantize:
    name: str

    def run(self, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult:
        ws = ctx.workspace
        meter = FrontMeter.of(ctx)
        with scratch_dir(ctx) as scratch:
            source = merged_weights_dir(ctx.workspace, candidate, scratch / "merged")
            tokenizer = load_tokenizer(source, ws.config.model)
            proposals = []
            try:
                full = write_gguf(source, scratch / "f32.gguf", dtype="f32")
                for fmt in ws.config.compress.quantize.formats:
                    path = quantize_gguf(full, scratch / f"{fmt}.gguf", fmt)
                    measured = meter.measure(LoadedModel(LlamaCppModel(path), tokenizer), path.stat().st_size)
                    proposals.append(Proposal(fmt, f"gguf-{fmt}", measured,
                                              store=lambda path=path: store_gguf(ws, path, tokenizer)))
            except ReverieError as exc:  # no llama.cpp, or an architecture the GGUF writer does not know
                return keep_by_policy(ctx, self.name, candidate, [], {}, no_variant_reason=str(exc))
            return keep_by_policy(ctx, self.name, candidate, proposals, {})
