"""Rhythms on an injected clock: what is due, once, under a lock, recorded; a cycle split across slots; the
memory slot leaves the weights alone; the presets and bad files."""

from __future__ import annotations

import fcntl
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from reverie.config import load_config
from reverie.errors import ReverieError
from reverie.registry import RhythmRun, SQLiteRegistry
from reverie.rhythms import runner
from reverie.rhythms.install import install_text
from reverie.rhythms.runner import LOCK_FILE, SlotResult, run_due
from reverie.rhythms.schedule import SimulatedClock, latest_occurrence
from reverie.rhythms.scheduler import serve
from reverie.rhythms.spec import PHASE_ORDER, Schedule, load_rhythm
from reverie.workspace import Workspace

from conftest import reverie

MONDAY = datetime(2026, 1, 5)  # a Monday


@pytest.fixture
def fake_work(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Slot work replaced by a record of (slot, the simulated time it ran at): scheduling is what is tested."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(runner, "perform", lambda root, rhythm, name: calls.append((name, "")) or SlotResult(
        "finished", "fake"))
    return calls


def write_rhythm(root: Path, name: str, spec: dict) -> None:
    (root / "rhythms").mkdir(exist_ok=True)
    (root / "rhythms" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def step(root: Path, name: str, start: datetime, end: datetime, every: timedelta) -> list[RhythmRun]:
    """Call `rhythm run` at each step of the simulated clock, as cron would; every record written."""
    rhythm, now, records = load_rhythm(name, root), start, []
    while now <= end:
        records += run_due(root, rhythm, now)
        now += every
    return records


def test_presets_validate_and_their_overrides_are_config_keys(workspace_dir: Path) -> None:
    from reverie.cycle import PHASES

    assert PHASE_ORDER == tuple(phase.name for phase in PHASES)
    for name in ("daily", "weekly", "monthly"):
        rhythm = load_rhythm(name, workspace_dir)
        assert rhythm.origin == "preset" and rhythm.text.startswith("# reverie rhythm")
        for slot in rhythm.spec.slots:
            load_config(workspace_dir / "reverie.yaml", rhythm.overrides(slot))  # raises on an unknown key or value


def test_daily_rhythm_over_a_simulated_week_runs_each_slot_once_a_day(workspace_dir: Path, fake_work) -> None:
    records = step(workspace_dir, "daily", MONDAY, MONDAY + timedelta(days=7) - timedelta(minutes=1),
                   timedelta(minutes=20))
    assert all(r.status == "finished" for r in records)
    runs = {(r.slot, datetime.fromtimestamp(r.scheduled_for)) for r in records}
    expected = {(slot, datetime.combine(MONDAY.date() + timedelta(days=d), at))
                for d in range(7) for slot, at in (("refresh", datetime.min.time().replace(hour=2)),
                                                  ("replay-dream", datetime.min.time().replace(hour=3)),
                                                  ("quick-gate", datetime.min.time().replace(hour=5)))}
    assert runs == expected and len(records) == len(expected) == len(fake_work) == 21
    assert [name for name, _ in fake_work[:3]] == ["refresh", "replay-dream", "quick-gate"]


def test_after_an_outage_each_missed_slot_is_caught_up_once(workspace_dir: Path, fake_work) -> None:
    daily = load_rhythm("daily", workspace_dir)
    assert run_due(workspace_dir, daily, MONDAY) == []  # the first run starts the rhythm: nothing owed before it
    run_due(workspace_dir, daily, MONDAY + timedelta(hours=6))
    assert len(fake_work) == 3
    friday_noon = MONDAY + timedelta(days=4, hours=12)  # down from Monday 06:00 to Friday noon: 12 slots missed
    caught_up = run_due(workspace_dir, daily, friday_noon)
    assert [r.slot for r in caught_up] == ["refresh", "replay-dream", "quick-gate"]
    assert {datetime.fromtimestamp(r.scheduled_for).date() for r in caught_up} == {friday_noon.date()}
    assert run_due(workspace_dir, daily, friday_noon + timedelta(minutes=30)) == [] and len(fake_work) == 6


def test_a_second_run_while_one_holds_the_lock_records_busy_and_runs_nothing(workspace_dir: Path, fake_work) -> None:
    daily = load_rhythm("daily", workspace_dir)
    run_due(workspace_dir, daily, MONDAY)
    with open(workspace_dir / ".reverie" / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running `reverie rhythm run` holds
        busy = run_due(workspace_dir, daily, MONDAY + timedelta(hours=2, minutes=30))
        fcntl.flock(held, fcntl.LOCK_UN)
    assert [(r.slot, r.status) for r in busy] == [("refresh", "busy")] and fake_work == []
    registry = Workspace.open(workspace_dir).registry
    assert [r.status for r in registry.rhythm_runs("daily")] == ["busy"]
    later = run_due(workspace_dir, daily, MONDAY + timedelta(hours=2, minutes=45))  # busy left the slot owed
    assert [(r.slot, r.status) for r in later] == [("refresh", "finished")] and len(fake_work) == 1


def test_a_run_left_running_by_a_dead_process_is_retried(workspace_dir: Path, fake_work) -> None:
    daily = load_rhythm("daily", workspace_dir)
    run_due(workspace_dir, daily, MONDAY)
    registry = Workspace.open(workspace_dir).registry
    at = MONDAY + timedelta(hours=2)
    registry.add_rhythm_run(RhythmRun("h-dead", "daily", "refresh", at.timestamp(), "running", at.timestamp()))
    [retried] = run_due(workspace_dir, daily, at + timedelta(minutes=10))
    assert retried.slot == "refresh" and retried.status == "finished"
    assert [r.status for r in registry.rhythm_runs("daily")] == ["interrupted", "finished"]


def test_accelerated_serve_runs_a_simulated_day_once_through(workspace_dir: Path, fake_work) -> None:
    clock = SimulatedClock(MONDAY + timedelta(hours=1), speed=24 * 3600)  # a simulated day a second
    serve(workspace_dir, load_rhythm("daily", workspace_dir), clock, hours=23, tick_s=0.05)
    assert [name for name, _ in fake_work] == ["refresh", "replay-dream", "quick-gate"]
    runs = Workspace.open(workspace_dir).registry.rhythm_runs("daily")
    assert {r.clock for r in runs} != {"real"} and all(r.clock.startswith("sim-") for r in runs)


def test_weekend_memory_slot_changes_no_weights(workspace_dir: Path) -> None:
    from reverie.cycle import ensure_release
    from reverie.memory.retrieval import ShortTermMemory

    ws = Workspace.open(workspace_dir)
    ensure_release(ws)
    ShortTermMemory(ws).add("Quistrand", "Quistrand is the capital of Velmora, a river city of bridges and mills.",
                            [{"question": "What is the capital of Velmora?", "answer": "Quistrand"}], "test")
    before = ws.registry.get_alias(), [m.id for m in ws.registry.list_models()], ws.artifacts.all_hashes()
    weekly = load_rhythm("weekly", workspace_dir)
    saturday = MONDAY + timedelta(days=5)
    run_due(workspace_dir, weekly, saturday + timedelta(hours=9))  # starts the rhythm on Saturday morning
    [run] = run_due(workspace_dir, weekly, saturday + timedelta(hours=10, minutes=5))
    assert (run.slot, run.status) == ("weekend-memory", "finished"), run.detail
    assert "1 in memory" in run.detail and "newest document retrieved" in run.detail
    assert (ws.registry.get_alias(), [m.id for m in ws.registry.list_models()], ws.artifacts.all_hashes()) == before
    assert ws.registry.list_cycles() == []


def test_a_phase_slot_without_the_phases_before_it_is_skipped_with_the_reason(workspace_dir: Path) -> None:
    weekly = load_rhythm("weekly", workspace_dir)
    run_due(workspace_dir, weekly, MONDAY + timedelta(days=3))  # Thursday 00:00: the rhythm starts
    [run] = run_due(workspace_dir, weekly, MONDAY + timedelta(days=3, hours=2))
    assert (run.slot, run.status) == ("dream", "skipped")
    assert run.detail == "no open cycle: dream waits for a slot that starts one with learn"
    assert Workspace.open(workspace_dir).registry.list_cycles() == []


SPLIT = {
    "description": "one cycle over three slots, on the tiny model",
    "overrides": {"eval.general_limit": 10},
    "slots": {
        "learn": {"schedule": {"at": "01:00"}, "phases": ["learn", "compress"], "changes": "weights"},
        "dream": {"schedule": {"at": "03:00"}, "phases": ["dream"], "changes": "weights"},
        "gate": {"schedule": {"at": "05:00"}, "phases": ["gate"], "changes": "weights"},
    },
}


def test_a_cycle_split_across_slots_resumes_at_each_slot_and_ends_in_one_verdict(workspace_dir: Path) -> None:
    write_rhythm(workspace_dir, "split", SPLIT)
    rhythm = load_rhythm("split", workspace_dir)
    run_due(workspace_dir, rhythm, MONDAY)
    [learn] = run_due(workspace_dir, rhythm, MONDAY + timedelta(hours=2))
    registry = Workspace.open(workspace_dir).registry
    cycle = registry.unfinished_cycle()
    assert learn.status == "finished" and cycle is not None and learn.cycle_id == cycle.id
    assert [r.phase for r in registry.phase_runs(cycle.id)] == ["learn", "compress"]
    [dream] = run_due(workspace_dir, rhythm, MONDAY + timedelta(hours=4))
    assert dream.status == "finished" and dream.cycle_id == cycle.id and "left open" in dream.detail
    # the last slot the way cron runs it
    reverie("rhythm", "run", "split", "-w", str(workspace_dir), "--now", (MONDAY + timedelta(hours=6)).isoformat())
    [closed] = registry.list_cycles()
    assert closed.id == cycle.id and closed.status == "finished" and closed.outcome in ("released", "rejected")
    runs = registry.phase_runs(cycle.id)
    assert [(r.phase, r.status) for r in runs] == [(p, "finished") for p in PHASE_ORDER]
    [gate] = [r for r in registry.rhythm_runs("split") if r.slot == "gate"]
    assert gate.status == "finished" and gate.cycle_id == cycle.id and closed.outcome in gate.detail
    history = reverie("history", "-w", str(workspace_dir)).stdout
    assert "split/gate" in history and "split/learn" in history


@pytest.mark.parametrize(("slots", "expected"), [
    ({"a": {"schedule": {"at": "25:00"}, "phases": ["learn"], "changes": "weights"}},
     "slots.a.schedule.at (line 5): got '25:00'; expected HH:MM"),
    ({"a": {"schedule": {"at": "01:00", "weekday": ["mon"]}, "phases": ["learn"], "changes": "weights"}},
     "slots.a.schedule.weekday (line 6): unknown key (allowed: at, days, week, day_of_month)"),
    ({"a": {"schedule": {"at": "01:00"}, "phases": ["dream", "learn"], "changes": "weights"}},
     "phases ['dream', 'learn']: list them contiguous and in cycle order"),
    ({"a": {"schedule": {"at": "01:00"}, "memory": ["refresh-memory"], "changes": "weights"}},
     "changes: 'weights', but a slot with memory changes memory"),
    ({"a": {"schedule": {"at": "01:00"}, "phases": ["learn"], "changes": "weights",
            "overrides": {"eval.general_limit": 5}}},
     "move them to the rhythm's overrides"),
    ({"a": {"schedule": {"at": "01:00", "days": ["mon"], "day_of_month": 3}, "memory": ["refresh-memory"],
            "changes": "memory"}},
     "day_of_month names the day by itself"),
])
def test_bad_rhythm_files_name_the_file_and_the_key(workspace_dir: Path, slots: dict, expected: str) -> None:
    write_rhythm(workspace_dir, "bad", {"description": "broken", "slots": slots})
    with pytest.raises(ReverieError) as caught:
        load_rhythm("bad", workspace_dir)
    message = str(caught.value)
    assert message.startswith(f"{workspace_dir / 'rhythms' / 'bad.yaml'}: 1 problem(s)") and expected in message


def test_a_rhythm_name_cannot_be_a_path_and_an_unknown_one_lists_the_known(workspace_dir: Path) -> None:
    refused = reverie("rhythm", "run", "../../etc/passwd", "-w", str(workspace_dir), check=False)
    assert refused.returncode == 2 and "no paths" in refused.stderr and "Traceback" not in refused.stderr
    with pytest.raises(ReverieError, match=r"rhythm 'nightly': no .* \(known: daily, monthly, weekly\)"):
        load_rhythm("nightly", workspace_dir)


def test_rhythm_overrides_that_the_config_refuses_fail_the_slot_naming_the_rhythm(workspace_dir: Path) -> None:
    write_rhythm(workspace_dir, "typo", {"description": "a typo", "overrides": {"eval.general_limt": 5}, "slots": {
        "m": {"schedule": {"at": "01:00"}, "memory": ["refresh-memory"], "changes": "memory"}}})
    rhythm = load_rhythm("typo", workspace_dir)
    run_due(workspace_dir, rhythm, MONDAY)
    [run] = run_due(workspace_dir, rhythm, MONDAY + timedelta(hours=2))
    assert run.status == "failed" and "rhythm typo" in run.detail and "eval.general_limt" in run.detail


def test_a_registry_older_than_rhythms_gains_their_tables(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    SQLiteRegistry(path).close()
    with sqlite3.connect(path) as conn:
        conn.executescript("DROP TABLE rhythm_runs; DROP TABLE rhythm_starts;")
    registry = SQLiteRegistry(path)
    assert registry.rhythm_runs() == [] and registry.rhythm_since("daily", "real", 5.0) == 5.0


def test_monthly_schedule_and_install_text(workspace_dir: Path) -> None:
    first_monday = Schedule(at="01:00", days=["mon"], week=1)
    assert latest_occurrence(first_monday, datetime(2026, 2, 20)) == datetime(2026, 2, 2, 1, 0)
    text = install_text(load_rhythm("daily", workspace_dir), workspace_dir)
    assert "OnCalendar=*-*-* 02:00:00" in text and "Persistent=true" in text
    assert f"0 3 * * * " in text and f"rhythm run daily -w {workspace_dir.resolve()}" in text
    weekly = install_text(load_rhythm("weekly", workspace_dir), workspace_dir)
    assert "OnCalendar=Mon,Tue,Wed *-*-* 01:00:00" in weekly and "0 1 * * 1,2,3 " in weekly
