"""`reverie rhythm list | show | run | serve | install`: daily, weekly and monthly schedules of the cycle's parts."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from reverie.engines.libraries import quiet_libraries
from reverie.errors import ReverieError
from reverie.progress import results
from reverie.registry.store import RegistryStore
from reverie.rhythms.schedule import next_occurrence, system_now
from reverie.rhythms.spec import load_rhythm, rhythm_names
from reverie.workspace import Workspace

rhythm_app = typer.Typer(help="Rhythms: which phases run when (daily, weekly, monthly, or rhythms/NAME.yaml).",
                         no_args_is_help=True)
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]
NameArg = Annotated[str, typer.Argument(help="A preset (daily, weekly, monthly) or rhythms/NAME.yaml's NAME.")]


def _parse_time(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text).replace(microsecond=0)
    except ValueError:
        raise ReverieError(f"{option} {text!r}: expected a local date and time such as 2026-01-05T01:30") from None


@rhythm_app.command("list")
def list_rhythms(workspace: WorkspaceOpt = Path(".")) -> None:
    """The rhythms this workspace can run, and where each comes from."""
    ws = Workspace.open(workspace, validate=True)
    table = Table(title="rhythms")
    for column in ("name", "from", "description"):
        table.add_column(column)
    for name, origin in rhythm_names(ws.root).items():
        table.add_row(name, escape(origin), escape(load_rhythm(name, ws.root).spec.description))
    results.print(table)


@rhythm_app.command()
def show(name: NameArg, workspace: WorkspaceOpt = Path(".")) -> None:
    """The rhythm's file, each slot's next time and last run (copy the file to rhythms/NAME.yaml to change it)."""
    ws = Workspace.open(workspace, validate=True)
    rhythm = load_rhythm(name, ws.root)
    typer.echo(rhythm.text, nl=False)  # verbatim: a file to copy
    now = system_now()
    last = {run.slot: run for run in ws.registry.rhythm_runs(rhythm.name) if run.clock == "real"}
    table = Table(title=f"rhythm {rhythm.name} ({rhythm.origin})")
    for column in ("slot", "does", "next", "last run"):
        table.add_column(column)
    for slot_name, slot in rhythm.spec.slots.items():
        upcoming = next_occurrence(slot.schedule, now)
        run = last.get(slot_name)
        table.add_row(slot_name, ", ".join(slot.phases or slot.memory), f"{upcoming:%a %Y-%m-%d %H:%M}",
                      f"{_when(run.started_at)} {run.status}" if run else "-")
    results.print(table)


@rhythm_app.command()
def run(
    name: NameArg,
    workspace: WorkspaceOpt = Path("."),
    now: Annotated[Optional[str], typer.Option(help="Act as if it were this local time (ISO, e.g. "
                                               "2026-01-05T03:00): to try a rhythm out.")] = None,
) -> None:
    """Run every slot that is due now, once (a missed slot is caught up once); safe to call from cron."""
    quiet_libraries()
    ws = Workspace.open(workspace, validate=True)
    rhythm = load_rhythm(name, ws.root)
    from reverie.rhythms.runner import run_due

    records = run_due(ws.root, rhythm, _parse_time(now, "--now") if now else system_now())
    if not records:
        results.print(f"rhythm {rhythm.name}: nothing due")
    if failed := [r for r in records if r.status == "failed"]:
        raise ReverieError(f"rhythm {rhythm.name}: {len(failed)} slot(s) failed: "
                           + "; ".join(f"{r.slot}: {r.detail}" for r in failed))


@rhythm_app.command()
def serve(
    name: NameArg,
    workspace: WorkspaceOpt = Path("."),
    speed: Annotated[Optional[float], typer.Option(
        min=1, help="Run on a simulated clock this many times faster than real time (3600: an hour a second); "
        "it stands still while a slot works. Without it: the wall clock.")] = None,
    start: Annotated[Optional[str], typer.Option(help="With --speed: the simulated start (ISO local time; "
                                                 "default now).")] = None,
    hours: Annotated[Optional[float], typer.Option(min=0, help="With --speed: stop after this many simulated "
                                                   "hours (default 24).")] = None,
) -> None:
    """Keep an embedded scheduler (APScheduler) running the rhythm in the foreground."""
    from reverie.rhythms.schedule import SimulatedClock
    from reverie.rhythms.scheduler import serve as serve_rhythm

    quiet_libraries()
    ws = Workspace.open(workspace, validate=True)
    rhythm = load_rhythm(name, ws.root)
    if speed is None and (start or hours is not None):
        raise ReverieError("--start and --hours set a simulated clock: give --speed too")
    clock = SimulatedClock(_parse_time(start, "--start") if start else system_now(), speed) if speed else None
    serve_rhythm(ws.root, rhythm, clock, (24.0 if hours is None else hours) if clock else None)


@rhythm_app.command()
def install(name: NameArg, workspace: WorkspaceOpt = Path(".")) -> None:
    """Print the systemd timer and service, and the crontab lines, that run the rhythm."""
    from reverie.rhythms.install import install_text

    ws = Workspace.open(workspace, validate=True)
    typer.echo(install_text(load_rhythm(name, ws.root), ws.root), nl=False)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def rhythm_runs_table(registry: RegistryStore, limit: int = 30) -> Table | None:
    """The latest rhythm runs and skips (for `reverie history`), or None when no rhythm has run."""
    runs = registry.rhythm_runs()[-limit:]
    if not runs:
        return None
    table = Table(title="rhythm runs")
    for column in ("ran at", "rhythm/slot", "due", "status", "cycle", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    for run in runs:
        due = time.strftime("%a %Y-%m-%d %H:%M", time.localtime(run.scheduled_for))
        clock = "" if run.clock == "real" else " (simulated)"
        table.add_row(_when(run.started_at), f"{run.rhythm}/{run.slot}", due + clock, run.status, run.cycle_id or "-",
                      escape(run.detail))
    return table
