"""`reverie seal arc ...`: SEAL's few-shot ARC experiment. A self-edit is a training configuration the model
writes for a task; a fresh LoRA trained by it on the task's demonstrations predicts the test output.

Both commands journal every trial under .reverie/seal/, so rerunning an interrupted command resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from reverie.cli_seal import SetOpt, WorkspaceOpt, open_with_release
from reverie.errors import ReverieError
from reverie.progress import results, status_line

if TYPE_CHECKING:
    from reverie.engines.arc_ttt import ArcTrial
    from reverie.engines.rest_em import GeneratorRound

arc_app = typer.Typer(help="Few-shot ARC: self-edits choose augmentations and training; ReST-EM teaches them.",
                      no_args_is_help=True)
TasksOpt = Annotated[Path, typer.Option(help="ARC challenges JSON {task id: {train, test}} (relative: the workspace).")]
SolutionsOpt = Annotated[Path, typer.Option(help="ARC solutions JSON {task id: [test output grids]}.")]
LimitOpt = Annotated[Optional[int], typer.Option(min=1, help="At most this many tasks (the file's first).")]
ARC_CONDITION_HELP = ("Comma-separated, run in order, from: icl (in-context only), ttt (untrained self-edits), "
                      "seal (the trained generator's self-edits), oracle (a fixed search over configurations).")


def _report(key: str, trial: ArcTrial) -> None:
    verdict = "solved" if trial.solved else ("invalid: " + (trial.reason or "") if not trial.valid else "not solved")
    status_line(f"{key}: {verdict} ({trial.steps} steps, {trial.seconds:.0f} s)")


@arc_app.command()
def train(
    tasks: TasksOpt,
    solutions: SolutionsOpt,
    workspace: WorkspaceOpt = Path("."),
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Rounds in all (default dream.seal.arc.rounds).")] = None,
    limit: LimitOpt = None,
    set_: SetOpt = None,
) -> None:
    """Teach the ARC self-edit generator by ReST-EM on training tasks. Rerun to resume; raise --rounds to extend."""
    from reverie import arc_generator

    ws = open_with_release(workspace, set_)
    training = arc_generator.read_tasks(ws, tasks, solutions, limit)

    def announce(finished: GeneratorRound) -> None:
        r = finished.result
        status_line(f"round {finished.round}: {r.solved} of {r.self_edits} self-edits solved their task "
                    f"({r.tasks_solved} of {r.tasks} tasks), {r.kept} kept, {r.seconds / 60:.1f} min")

    done = arc_generator.train(ws, training, rounds, announce, _report)
    table = Table(title=f"ReST-EM rounds on {len(training)} ARC tasks")
    for column in ("round", "self-edits", "valid", "solved", "tasks solved", "kept", "minutes"):
        table.add_column(column, no_wrap=True)
    for finished in done:
        r = finished.result
        table.add_row(str(finished.round), str(r.self_edits), str(r.valid), str(r.solved), str(r.tasks_solved),
                      str(r.kept), f"{r.seconds / 60:.1f}")
    results.print(table)


def print_arc_summary(summary: dict) -> None:
    table = Table(title=f"exact-match success on {summary['evaluation_tasks']} ARC tasks")
    for column in ("condition", "per self-edit", "95% CI", "per task", "95% CI", "valid", "s per trial"):
        table.add_column(column, no_wrap=True)
    for condition, row in summary["conditions"].items():
        r = row["all"]
        table.add_row(condition, f"{r['per_self_edit']:.3f}", "{:.3f}-{:.3f}".format(*r["per_self_edit_ci95"]),
                      f"{r['tasks_solved']}/{r['tasks']}", "{:.3f}-{:.3f}".format(*r["per_task_ci95"]),
                      f"{r['valid']}/{r['self_edits']}", f"{r['s_per_trial']:.0f}")
    results.print(table)
    if summary["oracle"] is not None:
        results.print(f"oracle configuration: {summary['oracle']['configuration']}")
        results.print(f"tasks it solves: {', '.join(summary['subset']) or 'none'}")


@arc_app.command("eval")
def evaluate(
    tasks: TasksOpt,
    solutions: SolutionsOpt,
    workspace: WorkspaceOpt = Path("."),
    conditions: Annotated[str, typer.Option(help=ARC_CONDITION_HELP)] = "icl,ttt,seal",
    limit: LimitOpt = None,
    set_: SetOpt = None,
) -> None:
    """Measure on evaluation tasks: in-context learning, untrained self-edits, the trained generator's, an oracle."""
    from reverie import arc_generator
    from reverie.engines.arc_bench import ARC_CONDITIONS

    chosen = [c.strip() for c in conditions.split(",") if c.strip()]
    if not chosen or set(chosen) - set(ARC_CONDITIONS):
        raise ReverieError(f"--conditions {conditions!r}: choose from {', '.join(ARC_CONDITIONS)}")
    ws = open_with_release(workspace, set_)
    evaluation = arc_generator.read_tasks(ws, tasks, solutions, limit)
    bench = arc_generator.bench(ws, evaluation, use_trained="seal" in chosen, report=_report)
    for condition in chosen:
        bench.run(condition)
    print_arc_summary(bench.summary())
