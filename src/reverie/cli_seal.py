"""`reverie seal ...`: train the self-edit generator, write self-edits, and measure them.

Every long command journals its work under .reverie/seal/, so rerunning an interrupted command resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from reverie.engines.libraries import quiet_libraries
from reverie.errors import ReverieError
from reverie.progress import results, status_line
from reverie.workspace import Workspace

if TYPE_CHECKING:  # the engines import torch: only when a command runs
    from reverie.data.passages import Passage
    from reverie.engines.rest_em import GeneratorRound
    from reverie.engines.seal_bench import SealBench
    from reverie.registry import ModelRecord

seal_app = typer.Typer(help="SEAL self-edits: train the generator by ReST-EM, write self-edits, measure them.",
                       no_args_is_help=True)
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: KEY=VALUE (repeatable).")]
PassagesOpt = Annotated[
    str, typer.Option(help="'knowledge' (the workspace's documents with their eval_qa) or a SQuAD-format JSON file "
                      "(a relative path is read from the workspace folder).")
]
LimitOpt = Annotated[int, typer.Option(min=1, help="At most this many evaluation passages.")]
ConditionsOpt = Annotated[
    str, typer.Option(help="Comma-separated, run in order, from: base, passage, own, teacher, seal.")
]
out = results


def open_with_release(workspace: Path, overrides: list[str] | None) -> Workspace:
    """Open and validate the workspace; until a cycle has released, the base model is the release."""
    from reverie.cycle import ensure_release

    quiet_libraries()
    ws = Workspace.open(workspace, overrides or [], validate=True)
    ensure_release(ws)
    return ws


@seal_app.command()
def train(
    workspace: WorkspaceOpt = Path("."),
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Rounds in all (default dream.seal.rounds).")] = None,
    set_: SetOpt = None,
) -> None:
    """Teach the self-edit generator by ReST-EM on dream.seal.passages. Rerun to resume; raise --rounds to extend."""
    from reverie import generator

    ws = open_with_release(workspace, set_)

    def announce(finished: GeneratorRound, record: ModelRecord) -> None:
        r = finished.result
        status_line(f"round {finished.round}: best-of-k {r.best_accuracy:.3f} vs passage-only {r.baseline_accuracy:.3f}"
                    f", {r.kept} self-edits kept, {r.seconds / 60:.1f} min -> generator {record.id}")

    done = generator.train(ws, rounds, on_round=announce)
    table = Table(title="ReST-EM rounds")
    for column in ("round", "passage only", "sampled self-edits", "best of k", "kept", "generator"):
        table.add_column(column, no_wrap=True)
    for finished, record in done:
        r = finished.result
        table.add_row(str(finished.round), f"{r.baseline_accuracy:.3f}", f"{r.sampled_accuracy:.3f}",
                      f"{r.best_accuracy:.3f}", str(r.kept), record.id)
    out.print(table)
    out.print(f"generator: {generator.current_generator(ws).id} (the Dream phase uses it from the next cycle on)")


@seal_app.command()
def generate(
    output: Annotated[Path, typer.Argument(help="JSONL file to write: one {id, title, self_edits} per document.")],
    workspace: WorkspaceOpt = Path("."),
    samples: Annotated[int, typer.Option(min=1, max=64, help="Self-edits per document.")] = 1,
    set_: SetOpt = None,
) -> None:
    """Write self-edits for the workspace's documents with the current generator."""
    from reverie import generator
    from reverie.data.jsonl import jsonl_text
    from reverie.data.knowledge import load_knowledge
    from reverie.engines.inner_loop import generate_self_edits

    ws = open_with_release(workspace, set_)
    if not output.parent.is_dir():
        raise ReverieError(f"{output}: the folder {output.parent} does not exist")
    seal = ws.config.dream.seal
    record = generator.current_generator(ws)
    loaded = generator.load_writer(ws, record)
    documents = load_knowledge(ws.config.data.knowledge, ws.root).documents
    edits = generate_self_edits(loaded.model, loaded.tokenizer, [(d.title, d.text) for d in documents], seal.style,
                                samples, seal.temperature, seal.max_new_tokens, ws.config.eval.batch_size)
    rows = ({"id": d.id, "title": d.title, "self_edits": per_doc} for d, per_doc in zip(documents, edits))
    ws.write_text_atomic(output, jsonl_text(rows))
    items = sum(len(edit) for per_doc in edits for edit in per_doc)
    out.print(f"wrote {len(documents)} documents x {samples} self-edit(s), {items} items, by {record.id} to {output}")


def _print_summary(summary: dict) -> None:
    table = Table(title=f"closed-book accuracy over {summary['eval_passages']} passages "
                        f"({summary['questions']} questions)")
    for column in ("condition", "accuracy", "95% CI", "s per inner loop"):
        table.add_column(column, no_wrap=True)
    for condition, row in summary["conditions"].items():
        low, high = row["ci95"]
        table.add_row(condition, f"{row['accuracy']:.3f}", f"{low:.3f}-{high:.3f}", f"{row['s_per_inner_loop']:.1f}")
    out.print(table)
    for name, diff in summary["differences"].items():
        out.print(f"{name}: {diff['mean']:+.3f} (95% CI {diff['ci95'][0]:+.3f} to {diff['ci95'][1]:+.3f})")
    for name, total in summary["multi_passage"].items():
        out.print(f"{name} (one adapter per group of passages): {total['accuracy']:.3f} over {total['questions']} "
                  f"questions in {total['groups']} groups")


def _run_conditions(bench: SealBench, conditions: list[str], multi_passage: int = 0) -> None:
    def report(key: str, record: dict) -> None:
        status_line(f"{key}: accuracy {record['accuracy']:.2f}")

    for condition in conditions:
        if multi_passage:
            bench.run_multi_passage(condition, multi_passage, report)
        else:
            bench.run(condition, report)
    _print_summary(bench.summary())


def _evaluation(ws: Workspace, passages: str, limit: int) -> list[Passage]:
    from reverie import generator

    evaluation = generator.workspace_passages(ws, passages, "eval", "--passages")[:limit]
    if not evaluation:
        raise ReverieError(f"--passages {passages}: no passage with questions to evaluate on")
    return evaluation


def _conditions(text: str) -> list[str]:
    from reverie.engines.seal_bench import CONDITIONS

    chosen = [c.strip() for c in text.split(",") if c.strip()]
    if not chosen or set(chosen) - set(CONDITIONS):
        raise ReverieError(f"--conditions {text!r}: choose from {', '.join(CONDITIONS)}")
    return chosen


@seal_app.command("eval")
def evaluate(
    workspace: WorkspaceOpt = Path("."),
    passages: PassagesOpt = "knowledge",
    limit: LimitOpt = 50,
    conditions: ConditionsOpt = "base,passage,own,seal",
    multi_passage: Annotated[int, typer.Option(min=0, help="Train one adapter per this many passages at once "
                                               "(SEAL's continued-pretraining variant); 0: one per passage.")] = 0,
    set_: SetOpt = None,
) -> None:
    """Measure the trained generator: closed-book accuracy after an inner loop on each passage plus its self-edit,
    against the release with no training, the passage alone, and the release's own self-edits."""
    from reverie import generator

    chosen = _conditions(conditions)
    if multi_passage and "base" in chosen:
        chosen.remove("base")  # nothing to train: its per-passage score is the same
    ws = open_with_release(workspace, set_)
    bench_run = generator.bench(ws, _evaluation(ws, passages, limit), [], use_trained=True)
    _run_conditions(bench_run, chosen, multi_passage)


@seal_app.command()
def bench(
    workspace: WorkspaceOpt = Path("."),
    passages: PassagesOpt = "knowledge",
    limit: LimitOpt = 50,
    conditions: ConditionsOpt = "base,passage,own,seal",
    set_: SetOpt = None,
) -> None:
    """The SEAL paper's single-passage table from scratch: trains its own generator by ReST-EM on
    dream.seal.passages (registered nowhere), then scores every condition on --passages. Add 'teacher' to the
    conditions when the passages carry teacher `completions`. Training passages with an evaluation passage's
    title are left out."""
    from reverie import generator

    chosen = _conditions(conditions)
    ws = open_with_release(workspace, set_)
    seal = ws.config.dream.seal
    evaluation = _evaluation(ws, passages, limit)
    titles = {p.title for p in evaluation}
    pool = generator.workspace_passages(ws, seal.passages, "train", "dream.seal.passages")
    training = [p for p in pool if p.title not in titles]
    if "seal" in chosen and not training:
        raise ReverieError(f"dream.seal.passages ({seal.passages}) has no passage outside the evaluation titles: "
                           "set it to a SQuAD-format file of other passages (--set dream.seal.passages=FILE)")
    bench_run = generator.bench(ws, evaluation, training[: seal.max_passages],
                                on_round=lambda f: status_line(f"ReST-EM round {f.round} done"))
    _run_conditions(bench_run, chosen)
