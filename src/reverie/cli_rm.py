"""`reverie rm ...`: train a reward model on the preference pairs and measure it on the held-out ones.

`rm train` checkpoints under .reverie/rm/, so rerunning an interrupted command resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from reverie.cli_seal import open_with_release
from reverie.progress import results
from reverie.registry import JUDGE_ALIAS, REWARD_ALIAS
from reverie.workspace import Workspace

if TYPE_CHECKING:  # the engines import torch: only when a command runs
    from reverie.reward_models import GroupAccuracy

rm_app = typer.Typer(help="Reward models: train one on preference pairs, measure it on the held-out pairs.",
                     no_args_is_help=True)
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: KEY=VALUE (repeatable).")]
out = results


@rm_app.command()
def train(
    workspace: WorkspaceOpt = Path("."),
    alias: Annotated[str, typer.Option(
        help=f"'{REWARD_ALIAS}' (the model Dream's grpo optimises against) or '{JUDGE_ALIAS}' (the Gate's "
        "preference judge).")] = REWARD_ALIAS,
    split: Annotated[Optional[str], typer.Option(
        help="Preference split to train on: policy or judge (default: policy for reward, judge for judge). The "
        "two models must use different splits.")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", "-d", help="A preference dataset by name or hash prefix (repeatable; default: all).")] = None,
    set_: SetOpt = None,
) -> None:
    """Train a reward model (a score head on the release, LoRA unless align.reward.full) and register it behind
    the alias. Rerun the same command to resume after a kill."""
    from reverie import reward_models

    ws = open_with_release(workspace, set_)
    record = reward_models.train_reward_model(ws, alias, split, dataset)  # type: ignore[arg-type]
    report = reward_models.read_report(ws, record.id)
    if report is not None and report.training is not None:
        t = report.training
        out.print(f"trained on {t.pairs} {t.split} pairs in {t.steps} steps"
                  + (f" (resumed at step {t.resumed_from})" if t.resumed_from else "")
                  + f": loss {t.loss_start:.3f} -> {t.loss_end:.3f}, accuracy {t.accuracy_start:.3f} -> "
                  f"{t.accuracy_end:.3f}")
    out.print(f"{alias}: {record.id} (card: {ws.cards_dir / f'{record.id}.md'}; measure it with `reverie rm eval "
              f"{alias}`)")


def _row(table: Table, name: str, group: GroupAccuracy) -> None:
    from reverie.reward_models import share

    table.add_row(name, str(group.n), share(group.accuracy), share(group.length_accuracy))


@rm_app.command("eval")
def evaluate(
    model: Annotated[str, typer.Argument(help=f"A reward model id, or the alias '{REWARD_ALIAS}' or "
                                         f"'{JUDGE_ALIAS}'.")] = REWARD_ALIAS,
    workspace: WorkspaceOpt = Path("."),
    limit: Annotated[int, typer.Option(min=0, help="At most this many held-out pairs, in content-hash order "
                                       "(0: all).")] = 0,
    set_: SetOpt = None,
) -> None:
    """Pairwise accuracy with a 95% interval on the held-out pairs, beside the length-only rule."""
    from reverie import reward_models

    ws = open_with_release(workspace, set_)
    record = reward_models.resolve_reward_model(ws, model)
    result = reward_models.evaluate_reward_model(ws, record, limit)
    table = Table(title=f"{record.id} on {result.n} held-out pairs")
    for column in ("rule", "accuracy", "95% CI"):
        table.add_column(column, no_wrap=True)
    table.add_row("reward model", f"{result.accuracy:.3f}", f"{result.ci95[0]:.3f}-{result.ci95[1]:.3f}")
    table.add_row("length rule", f"{result.length_accuracy:.3f}",
                  f"{result.length_ci95[0]:.3f}-{result.length_ci95[1]:.3f}")
    out.print(table)
    groups = Table(title="by group")
    for column in ("group", "pairs", "accuracy", "length rule"):
        groups.add_column(column, no_wrap=True)
    _row(groups, "chosen is longer", result.chosen_longer)
    _row(groups, "chosen is shorter", result.chosen_shorter)
    for name, group in result.by_source.items():
        _row(groups, f"source {name}", group)
    for name, group in result.by_bucket.items():
        _row(groups, f"bucket {name}", group)
    out.print(groups)
    agreement = "-" if result.agreement is None else f"{result.agreement:.3f}"
    out.print(f"agreement with the length rule: {agreement}")
    out.print(reward_models.length_explanation(result))


@rm_app.command("list")
def list_(workspace: WorkspaceOpt = Path(".")) -> None:
    """The registered reward models, their aliases, splits and held-out accuracy."""
    from reverie import reward_models

    ws = Workspace.open(workspace, validate=True)
    aliases = {ws.registry.get_alias(name): name for name in (REWARD_ALIAS, JUDGE_ALIAS)}
    table = Table(title="reward models")
    for column in ("model", "alias", "split", "pairs", "held-out accuracy", "length rule"):
        table.add_column(column, no_wrap=True)
    for record, report in reward_models.reward_models(ws):
        t, e = (report.training, report.evaluation) if report else (None, None)
        table.add_row(record.id, aliases.get(record.id, ""), t.split if t else "-", str(t.pairs) if t else "-",
                      f"{e.accuracy:.3f} ({e.ci95[0]:.3f}-{e.ci95[1]:.3f})" if e else "-",
                      f"{e.length_accuracy:.3f}" if e else "-")
    out.print(table)
