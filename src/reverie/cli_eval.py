"""`reverie eval` (run suites on any model version and print a table) and `reverie release --override`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from reverie.engines.libraries import quiet_libraries
from reverie.errors import ReverieError
from reverie.metrics import LM_EVAL_PREFIX, SUITES, is_harness_suite
from reverie.progress import results
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

if TYPE_CHECKING:  # the suites import torch; the CLI loads them only when it evaluates
    from reverie.engines.suites import SuiteReport

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
        "--suite", "-s", help="Suite to run (repeatable), or lm-eval/TASK; default: eval.suites.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the suites and their metrics, run nothing.")] = False,
    against: Annotated[Optional[str], typer.Option(
        help="Also evaluate this model id (or 'release') and show the paired change against it, as the Gate "
        "would; the forgetting check's power then uses the flip rate between the two.")] = None,
    lm_eval: Annotated[Optional[list[str]], typer.Option(
        "--lm-eval", help="Run lm-evaluation-harness TASK as the suite lm-eval/TASK (repeatable); needs "
        "reverie[harness].")] = None,
    lm_eval_include: Annotated[Optional[Path], typer.Option(
        help="Folder of lm-eval task YAML files (sets eval.harness_include).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        help="lm-eval: at most this many documents per task (sets eval.harness_limit).")] = None,
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Run evaluation suites on a model version; results are stored per model (a rerun is free) and shown with
    confidence intervals. The items behind each number are in .reverie/evals/MODEL/. lm-evaluation-harness tasks
    run as suites named lm-eval/TASK (gate thresholds: lm-eval/TASK.METRIC). The general suite's line says how
    likely it is to see a 2-point drop (its power) and how many items that needs."""
    if list_:
        for name, metrics in SUITES.items():
            for metric, description in metrics.items():
                results.print(f"{name}.{metric}: {description}", highlight=False)
        results.print("lm-eval/<task>.<metric>: any local lm-evaluation-harness task listed in eval.suites (metric as "
                      "lm-eval names it, less ',none')", highlight=False)
        return
    from reverie.cycle import ensure_release
    from reverie.engines.suites import SuiteRunner
    from reverie.engines.suites.forgetting import forgetting_power_line

    quiet_libraries()
    overrides = list(set_ or [])
    if lm_eval_include is not None:
        overrides.append(f"eval.harness_include={lm_eval_include.resolve()}")
    if limit is not None:
        overrides.append(f"eval.harness_limit={limit}")
    ws = Workspace.open(workspace, overrides, validate=True)
    record = ws.registry.get_model(ensure_release(ws)) if model == "release" else resolve_model(ws, model)
    reference = None if against is None else resolve_model(ws, against)
    from reverie.model_card import refresh_model_index

    tasks = [f"{LM_EVAL_PREFIX}{task}" for task in lm_eval or []]
    names = (suite or ([] if tasks else list(ws.config.eval.suites))) + tasks
    if unknown := [n for n in names if n not in SUITES and not is_harness_suite(n)]:
        raise ReverieError(f"--suite {', '.join(unknown)}: unknown (choose from {', '.join(SUITES)}, or "
                           "lm-eval/TASK)")
    runner = SuiteRunner(ws, opponent=reference)
    confidence = ws.config.gate.confidence
    reports = runner.reports(record, names)
    references = runner.reports(reference, names) if reference is not None else {}
    results.print(_table(record, reports, references, reference, confidence))
    if "general" in reports:
        results.print(forgetting_power_line(reports["general"], references.get("general"), confidence),
                      highlight=False)
    if refresh_model_index(ws, record):
        results.print(f"updated the model-index of {record.id}'s card")


def _table(record: ModelRecord, reports: dict[str, SuiteReport], references: dict[str, SuiteReport],
           reference: ModelRecord | None, confidence: float) -> Table:
    from reverie.engines.release_decision import regression

    table = Table(title=f"{record.id} ({record.status})")
    columns = ["metric", "mean", f"{confidence:.0%} CI", "items", "suite s"]
    if reference is not None:
        columns.append(f"drop vs {reference.id} ({confidence:.0%} CI)")
    for column in columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, report in reports.items():
        for metric, interval in report.summary(confidence).items():
            row = [f"{name}.{metric}", f"{interval.mean:.3f}", f"{interval.low:.3f}-{interval.high:.3f}",
                   str(interval.n), f"{report.seconds:.1f}"]
            if reference is not None:
                drop = regression(report, references[name], f"{name}.{metric}", confidence)
                row.append(f"{drop.mean:+.3f} ({drop.low:+.3f} to {drop.high:+.3f})" if drop.n else "-")
            table.add_row(*row)
    return table


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
