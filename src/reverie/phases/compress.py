"""Compress: run the configured Compress strategies (compress.strategies) in order, each on the model the one
before it kept; a strategy that keeps nothing passes the candidate on (phases/strategies/)."""

from __future__ import annotations

from reverie.phases.base import PhaseContext, PhaseResult
from reverie.phases.outputs import CompressOutput
from reverie.phases.strategies import COMPRESS
from reverie.phases.strategies.base import run_in_turn


class Compress:
    name = "compress"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        candidate = ctx.candidate()
        names = ctx.workspace.config.compress.strategies
        if not names:
            return PhaseResult(CompressOutput(model=candidate.id, reason="compress.strategies is empty"))
        final, results, combined = run_in_turn(
            candidate, [(name, lambda model, name=name: COMPRESS[name].run(ctx, model)) for name in names])
        return PhaseResult(CompressOutput(model=final.id, strategies=[r.outcome for r in results]), combined,
                           [m for r in results for m in r.new_models], [d for r in results for d in r.new_datasets])
