"""`reverie eval` (run suites on any model version and print a table) and `reverie release --override`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from reverie.engines.libraries import quiet_libraries
from reverie.errors import ReverieError
from reverie.metrics import SUITES
from reverie.progress import results
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: KEY=VALUE (repeatable).")]


def resolve_model(ws: Workspace, name: str) -> ModelRecord:
    """A model id, or 'release' for the current release."""
    model_id = ws.registry.get_alias() if name == "release" else name
    if model_id is None:
        raise ReverieError("there is no release yet (run `reverie cycle`)")
    return ws.registry.get_model(model_id)


def eval_command(
    model: Annotated[str, typer.Argument(help="Model id, or 'release' (the base model until a cycle releases).")]
    = "release",
    suite: Annotated[Optional[list[str]], typer.Option(
        "--suite", "-s", help="Suite to run (repeatable); default: eval.suites.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the suites and their metrics, run nothing.")] = False,
    lm_eval: Annotated[Optional[list[str]], typer.Option(
        "--lm-eval", help="An lm-evaluation-harness task with local data (repeatable); needs reverie[harness].")] = None,
    lm_eval_include: Annotated[Optional[Path], typer.Option(help="Folder of lm-eval task YAML files.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="lm-eval: at most this many documents per task.")] = None,
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Run evaluation suites on a model version; results are stored per model (a rerun is free) and shown with
    confidence intervals. The items behind each number are in .reverie/evals/MODEL/. With --lm-eval, runs
    lm-evaluation-harness tasks instead and stores their results in the registry as lm-eval/TASK."""
    if list_:
        for name, metrics in SUITES.items():
            for metric, description in metrics.items():
                results.print(f"{name}.{metric}: {description}", highlight=False)
        return
    from reverie.engines.suites import SuiteRunner

    from reverie.cycle import ensure_release

    quiet_libraries()
    ws = Workspace.open(workspace, set_ or [], validate=True)
    record = ws.registry.get_model(ensure_release(ws)) if model == "release" else resolve_model(ws, model)
    from reverie.model_card import refresh_model_index

    if lm_eval:
        _run_lm_eval(ws, record, lm_eval, lm_eval_include, limit)
        if not suite:
            refresh_model_index(ws, record)
            return
    names = suite or list(ws.config.eval.suites)
    if unknown := [n for n in names if n not in SUITES]:
        raise ReverieError(f"--suite {', '.join(unknown)}: unknown (choose from {', '.join(SUITES)})")
    runner = SuiteRunner(ws)
    confidence = ws.config.gate.confidence
    table = Table(title=f"{record.id} ({record.status})")
    for column in ("metric", "mean", f"{confidence:.0%} CI", "items", "suite s"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in names:
        report = runner.report(record, name)
        for metric, interval in report.summary(confidence).items():
            table.add_row(f"{name}.{metric}", f"{interval.mean:.3f}", f"{interval.low:.3f}-{interval.high:.3f}",
                          str(interval.n), f"{report.seconds:.1f}")
    results.print(table)
    if refresh_model_index(ws, record):
        results.print(f"updated the model-index of {record.id}'s card")


def _run_lm_eval(ws: Workspace, record: ModelRecord, tasks: list[str], include: Path | None,
                 limit: int | None) -> None:
    from peft import PeftModel

    from reverie.engines.harness import run_lm_eval
    from reverie.engines.suites.runner import LM_EVAL_PREFIX
    from reverie.engines.models import load_version

    loaded = load_version(ws, record)
    model = loaded.model.merge_and_unload() if isinstance(loaded.model, PeftModel) else loaded.model
    scores = run_lm_eval(model, loaded.tokenizer, tasks, include, limit, ws.config.eval.batch_size)
    table = Table(title=f"lm-eval on {record.id}")
    for column in ("task", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for task, metrics in scores.items():
        ws.registry.log_metrics(record.id, f"{LM_EVAL_PREFIX}{task}", metrics)
        for metric, value in metrics.items():
            table.add_row(task, metric, f"{value:.4f}")
    results.print(table)


def release_command(
    model: Annotated[str, typer.Argument(help="Id of a candidate the Gate rejected.")],
    override: Annotated[bool, typer.Option("--override", help="Release it over the Gate's verdict.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the registry and the model card.")] = "",
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Release a rejected candidate by a person's decision, with a written reason. Red lines cannot be
    overridden."""
    from reverie.cycle import override_release

    if not override:
        raise ReverieError("only the Gate releases a model; to overrule it, pass --override and --reason")
    ws = Workspace.open(workspace, validate=True)
    override_release(ws, model, reason)
    results.print(f"released {model} over the Gate's verdict; reason recorded (see `reverie history`)")
