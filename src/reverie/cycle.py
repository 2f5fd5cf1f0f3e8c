"""The sleep cycle: the one place that knows the order Learn -> Compress -> Dream -> Gate.

Every phase run is recorded before and after it runs. A cycle killed at any moment resumes from its last
finished phase; the release pointer moves only in the final transaction that closes the cycle.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from reverie.errors import ReverieError
from reverie.phases.base import Phase, PhaseContext
from reverie.phases.compress import Compress
from reverie.phases.dream import Dream
from reverie.phases.gate import Gate
from reverie.phases.learn import Learn
from reverie.progress import status_line
from reverie.registry import Cycle, ModelRecord, PhaseRun
from reverie.workspace import Workspace, code_version

PHASES: tuple[Phase, ...] = (Learn(), Compress(), Dream(), Gate())


@dataclass
class CycleOutcome:
    cycle_id: str
    released: bool
    model_id: str
    reasons: list[str]
    candidate_scores: dict[str, float]
    reference_scores: dict[str, float]


def ensure_release(workspace: Workspace) -> str:
    """The current release; on a fresh workspace the configured base model becomes the first one."""
    registry = workspace.registry
    current = registry.get_alias()
    if current:
        return current
    base = ModelRecord(
        id=f"m-{uuid.uuid4().hex[:10]}", status="base", source=workspace.config.model.source,
        config_hash=workspace.config.fingerprint(), code_version=code_version(), created_at=time.time(),
    )
    registry.add_model(base)
    registry.set_alias(base.id, "bootstrap")
    return base.id


def _open_cycle(workspace: Workspace, resume: bool) -> Cycle:
    registry = workspace.registry
    unfinished = registry.unfinished_cycle()
    if unfinished and not resume:
        raise ReverieError(f"cycle {unfinished.id} was interrupted; continue it with `reverie cycle --resume`")
    if resume:
        if not unfinished:
            raise ReverieError("there is no interrupted cycle to resume (start one with `reverie cycle`)")
        if unfinished.config_hash != workspace.config.fingerprint():
            raise ReverieError(
                f"reverie.yaml changed since cycle {unfinished.id} started; restore it to resume, "
                "or abandon the cycle with `reverie cycle --abandon`"
            )
        stale = registry.interrupt_running_phases(unfinished.id)
        removed = workspace.artifacts.collect_garbage(registry.referenced_artifacts())
        status_line(
            f"resuming cycle {unfinished.id}: {stale} interrupted phase run(s), {len(removed)} orphaned artifact(s) removed"
        )
        return unfinished
    cycle = Cycle(
        id=f"c-{uuid.uuid4().hex[:10]}", status="running", base_model_id=ensure_release(workspace),
        config_hash=workspace.config.fingerprint(), started_at=time.time(),
    )
    registry.start_cycle(cycle)
    status_line(f"cycle {cycle.id} started from release {cycle.base_model_id}")
    return cycle


def run_cycle(workspace: Workspace, resume: bool = False) -> CycleOutcome:
    """Run (or resume) one sleep cycle and release or reject its candidate."""
    registry = workspace.registry
    with workspace.cycle_lock():
        cycle = _open_cycle(workspace, resume)
        handoff = {r.phase: r.outputs for r in registry.phase_runs(cycle.id) if r.status == "finished"}
        for phase in PHASES:
            if phase.name in handoff:
                status_line(f"[dim]{phase.name:<8} already finished, skipped[/dim]")
                continue
            ctx = PhaseContext(workspace, cycle, dict(handoff))
            run = PhaseRun(
                id=f"r-{uuid.uuid4().hex[:10]}", cycle_id=cycle.id, phase=phase.name, status="running",
                inputs={"model": ctx.candidate().id, "config_hash": cycle.config_hash},
                started_at=time.time(),
            )
            registry.start_phase(run)
            status_line(f"[bold]{phase.name:<8}[/bold] running on {run.inputs['model']}")
            try:
                result = phase.run(ctx)
            except BaseException as exc:
                registry.fail_phase(run.id, f"{type(exc).__name__}: {exc}")
                raise
            registry.finish_phase(run, result.outputs, result.metrics, result.new_models)
            handoff[phase.name] = result.outputs
            figures = ", ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:4])
            status_line(f"{phase.name:<8} done in {time.time() - run.started_at:.1f}s -> {result.outputs['model']}  {figures}")

        verdict = handoff["gate"]
        released = verdict["verdict"] == "release"
        registry.close_cycle(cycle.id, "released" if released else "rejected", verdict["model"], released)
        status_line(
            f"cycle {cycle.id}: {'released' if released else 'rejected'} {verdict['model']}"
            + ("" if released else " (" + "; ".join(verdict["reasons"]) + "); still serving " + verdict["reference"])
        )
        return CycleOutcome(
            cycle.id, released, verdict["model"], verdict["reasons"], verdict["candidate_scores"],
            verdict["reference_scores"],
        )


def abandon_cycle(workspace: Workspace) -> str:
    """Close an interrupted cycle without a verdict, so a new one can start."""
    registry = workspace.registry
    with workspace.cycle_lock():
        cycle = registry.unfinished_cycle()
        if not cycle:
            raise ReverieError("there is no interrupted cycle to abandon")
        registry.interrupt_running_phases(cycle.id)
        registry.abandon_cycle(cycle.id)
        workspace.artifacts.collect_garbage(registry.referenced_artifacts())
        return cycle.id


def rollback(workspace: Workspace) -> tuple[str, str]:
    """Point the release alias back at the release before the current one; return (from, to)."""
    registry = workspace.registry
    stack: list[str] = []
    for event in registry.release_events():
        if event.action == "rollback":
            stack.pop()
        else:
            stack.append(event.model_id)
    if len(stack) < 2:
        raise ReverieError("there is no earlier release to roll back to (see `reverie history`)")
    registry.set_alias(stack[-2], "rollback")
    return stack[-1], stack[-2]
