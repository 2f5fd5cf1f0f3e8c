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
        return run_in_turn(candidate, names, lambda name, model: COMPRESS[name].run(ctx, model), CompressOutput)
