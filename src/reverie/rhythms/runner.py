"""`reverie rhythm run`: run each slot that is due now, once, under a single-instance lock, recording every run
and skip in the registry, so that cron or a systemd timer can call it as often as it likes."""

from __future__ import annotations

import fcntl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reverie.cycle import run_cycle
from reverie.errors import ConfigError, ReverieError
from reverie.progress import status_line
from reverie.registry import RhythmRun
from reverie.registry.store import RegistryStore
from reverie.rhythms.actions import MEMORY_ACTIONS
from reverie.rhythms.schedule import latest_occurrence
from reverie.rhythms.spec import PHASE_ORDER, Rhythm, Slot
from reverie.workspace import Workspace

LOCK_FILE = "rhythm.lock"
CONSUMING = ("finished", "skipped", "failed")  # statuses that use up an occurrence (entities.RhythmRunStatus)


@dataclass(frozen=True)
class SlotResult:
    status: str  # finished | skipped | failed | busy
    detail: str
    cycle_id: str | None = None


def due_slots(rhythm: Rhythm, registry: RegistryStore, now: datetime, clock: str) -> list[tuple[datetime, str]]:
    """(occurrence, slot) for every slot owed at `now`, oldest first: its latest scheduled time at or before
    `now` is newer than both the occurrence its last run used up and the rhythm's first run on this clock."""
    since = registry.rhythm_since(rhythm.name, clock, now.timestamp())
    used: dict[str, float] = {}
    for run in registry.rhythm_runs(rhythm.name):
        if run.clock == clock and run.status in CONSUMING:
            used[run.slot] = max(used.get(run.slot, float("-inf")), run.scheduled_for)
    owed = []
    for name, slot in rhythm.spec.slots.items():
        at = latest_occurrence(slot.schedule, now)
        if at is not None and at.timestamp() >= since and at.timestamp() > used.get(name, float("-inf")):
            owed.append((at, name))
    return sorted(owed)


@contextmanager
def _rhythm_lock(ws: Workspace) -> Iterator[bool]:
    """Whether this process holds the workspace's rhythm lock (never waits; the OS drops it if the process dies)."""
    with open(ws.state / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_due(root: Path, rhythm: Rhythm, now: datetime, clock: str = "real") -> list[RhythmRun]:
    """Run every slot owed at `now`, oldest occurrence first; returns the records written. With the lock held
    elsewhere, each owed slot is recorded as busy (it stays owed) and nothing runs."""
    ws = Workspace.open(root)
    registry = ws.registry
    records = []
    with _rhythm_lock(ws) as held:
        owed = due_slots(rhythm, registry, now, clock)
        if held:
            registry.interrupt_rhythm_runs(rhythm.name)  # left 'running' by a process that died: owed again
        for at, name in owed:
            run = RhythmRun(f"h-{uuid.uuid4().hex[:10]}", rhythm.name, name, at.timestamp(), "running", time.time(),
                            clock)
            if not held:
                run.status, run.detail = "busy", "another `reverie rhythm` process holds the rhythm lock"
                run.finished_at = run.started_at
                registry.add_rhythm_run(run)
            else:
                registry.add_rhythm_run(run)
                status_line(f"[bold]{rhythm.name}/{name}[/bold] (due {at:%a %Y-%m-%d %H:%M}) running")
                result = _attempt(root, rhythm, name)
                registry.finish_rhythm_run(run.id, result.status, result.detail, result.cycle_id)
                run.status, run.detail, run.cycle_id = result.status, result.detail, result.cycle_id
            status_line(f"{rhythm.name}/{name}: {run.status}: {run.detail}")
            records.append(run)
    return records


def _attempt(root: Path, rhythm: Rhythm, name: str) -> SlotResult:
    """The slot's result; an error is recorded as a failure (the next slot still runs), an interrupt is not."""
    try:
        return perform(root, rhythm, name)
    except ReverieError as exc:
        return SlotResult("failed", str(exc))
    except Exception as exc:  # noqa: BLE001 -- recorded, and `reverie rhythm run` exits non-zero
        return SlotResult("failed", f"{type(exc).__name__}: {exc}")


def perform(root: Path, rhythm: Rhythm, name: str) -> SlotResult:
    """Do one slot's work, in a workspace opened with the rhythm's and the slot's config overrides."""
    try:
        ws = Workspace.open(root, rhythm.overrides(name), validate=True)
    except ConfigError as exc:
        raise ReverieError(f"rhythm {rhythm.name} ({rhythm.origin}), slot {name}, with the rhythm's overrides: "
                           f"{exc}") from None
    slot = rhythm.spec.slots[name]
    return _memory_slot(ws, slot) if slot.memory else _phase_slot(ws, slot)


def _weights_state(ws: Workspace) -> tuple[str | None, list[str]]:
    return ws.registry.get_alias(), [model.id for model in ws.registry.list_models()]


def _memory_slot(ws: Workspace, slot: Slot) -> SlotResult:
    before = _weights_state(ws)
    lines = [MEMORY_ACTIONS[action].run(ws) for action in slot.memory]
    if _weights_state(ws) != before:
        return SlotResult("failed", "a memory-only slot changed the release or the models: " + "; ".join(lines))
    return SlotResult("finished", "; ".join(lines))


def _phase_slot(ws: Workspace, slot: Slot) -> SlotResult:
    """Run the slot's phases of the open cycle (a slot starting at learn opens one); skip, saying why, when the
    phases before them have not finished or theirs already have."""
    registry = ws.registry
    if ws.cycle_process_alive():
        return SlotResult("busy", "a cycle is running in another process")
    cycle = registry.unfinished_cycle()
    finished = {r.phase for r in registry.phase_runs(cycle.id) if r.status == "finished"} if cycle else set()
    earlier = PHASE_ORDER[: PHASE_ORDER.index(slot.phases[0])]
    if cycle is None and earlier:
        return SlotResult("skipped", f"no open cycle: {slot.phases[0]} waits for a slot that starts one with learn")
    if cycle is not None and set(slot.phases) <= finished:
        return SlotResult("skipped", f"cycle {cycle.id} has already finished {', '.join(slot.phases)}", cycle.id)
    if missing := [phase for phase in earlier if phase not in finished]:
        return SlotResult("skipped", f"cycle {cycle.id} has not finished {', '.join(missing)}: waiting for them",
                          cycle.id)
    ran = [phase for phase in slot.phases if phase not in finished]
    outcome = run_cycle(ws, resume=cycle is not None, until=None if slot.phases[-1] == "gate" else slot.phases[-1])
    if outcome is None:
        cycle_id = registry.unfinished_cycle().id
        return SlotResult("finished", f"ran {', '.join(ran)}; cycle {cycle_id} left open for the next slot", cycle_id)
    if outcome.released:
        return SlotResult("finished", f"ran {', '.join(ran)}; released {outcome.model_id}", outcome.cycle_id)
    return SlotResult("finished", f"ran {', '.join(ran)}; rejected {outcome.model_id} ({'; '.join(outcome.reasons)}); "
                      f"kept release {registry.get_alias()}", outcome.cycle_id)
