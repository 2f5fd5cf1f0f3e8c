"""Dream: the candidate trains on data written by a model, after that data passes a quality gate.

Each configured strategy (dream.strategies, in order: phases/strategies/) writes data; the shared tail trains
the candidate on it and keeps the result only when its closed-book accuracy on the probe split (the training
questions: what Learn taught) fell by no more than dream.max_regression, merged under the same A/B check as
Compress or kept as an adapter. That guard cannot see a loss once Learn has saturated the probe (the demo
cycle: 1.000 before and after); the answer loss on it is recorded beside it but not judged: in the demo it
doubled while held-out accuracy rose.
"""

from __future__ import annotations

from reverie.phases.base import PhaseContext, PhaseResult
from reverie.phases.outputs import DreamOutput
from reverie.phases.strategies import DREAM
from reverie.phases.strategies.base import dream_with, run_in_turn


class Dream:
    name = "dream"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        candidate = ctx.candidate()
        settings = ctx.workspace.config.dream
        if not settings.enabled:
            return PhaseResult(DreamOutput(model=candidate.id, reason="dream.enabled is off"))
        return run_in_turn(candidate, settings.strategies, lambda name, model: dream_with(DREAM[name], ctx, model),
                           DreamOutput)
