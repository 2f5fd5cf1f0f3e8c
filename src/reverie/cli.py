"""The `reverie` command line. It sits on top: it calls the cycle and reads the registry, nothing imports it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reverie.cli_data import data_app
from reverie.cli_eval import eval_command, release_command, resolve_model
from reverie.cli_memory import memory_app
from reverie.cli_rhythm import rhythm_app, rhythm_runs_table
from reverie.cli_rm import rm_app
from reverie.cli_seal import seal_app
from reverie.cli_seal_arc import arc_app
from reverie.config import CONFIG_FILE
from reverie.cycle_inputs import load_inputs, waiting_for_next_cycle
from reverie.engines.libraries import quiet_libraries
from reverie.errors import ReverieError
from reverie.phases.outputs import gate_scores
from reverie.presets import DEFAULT_PRESET, preset_names
from reverie.progress import results
from reverie.registry import GENERATOR_ALIAS
from reverie.workspace import Workspace

app = typer.Typer(help="Run a language model's version iteration as a sleep cycle.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
out = results

app.add_typer(seal_app, name="seal")
seal_app.add_typer(arc_app, name="arc")
app.add_typer(data_app, name="data")
app.add_typer(memory_app, name="memory")
app.add_typer(rm_app, name="rm")
app.add_typer(rhythm_app, name="rhythm")
app.command("eval")(eval_command)
app.command("release")(release_command)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: KEY=VALUE (repeatable).")]


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create or adopt.")] = Path("."),
    preset: Annotated[str, typer.Option(help=f"Preset to start from: {', '.join(preset_names())}.")] = DEFAULT_PRESET,
) -> None:
    """Create a workspace: a commented reverie.yaml from a preset and the .reverie/ state folder."""
    config = directory / CONFIG_FILE
    kept = config.exists()
    Workspace.init(directory, preset)
    note = f"kept the existing {config}, not the {preset} preset" if kept else f"edit {config}"
    out.print(f"workspace ready in {directory} ({note}, then run `reverie cycle`)")


@app.command()
def cycle(
    workspace: WorkspaceOpt = Path("."),
    resume: Annotated[bool, typer.Option(help="Continue the interrupted cycle from its last finished phase.")] = False,
    abandon: Annotated[bool, typer.Option(help="Close the interrupted cycle without a verdict.")] = False,
    set_: SetOpt = None,
) -> None:
    """Run one sleep cycle: Learn, Compress, Dream, Gate; then release or reject."""
    from reverie.cycle import abandon_cycle, run_cycle

    quiet_libraries()
    ws = Workspace.open(workspace, set_ or [], validate=True)
    if abandon:
        out.print(f"abandoned cycle {abandon_cycle(ws)}")
        return
    outcome = run_cycle(ws, resume=resume)
    _print_scores(outcome.reference_scores, outcome.candidate_scores)


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Workspace folder for the demo.")] = Path("demo-workspace"),
    set_: SetOpt = None,
) -> None:
    """Initialise a workspace if needed and run one cycle on the embedded model and the demo knowledge."""
    from reverie.cycle import run_cycle

    quiet_libraries()
    if not (directory / "reverie.yaml").exists():
        Workspace.init(directory, preset="demo")
    ws = Workspace.open(directory, set_ or [], validate=True)
    started = time.time()
    outcome = run_cycle(ws, resume=ws.registry.unfinished_cycle() is not None)
    out.print(f"\ncycle {outcome.cycle_id} finished in {time.time() - started:.0f}s: "
              + ("released " if outcome.released else "rejected ") + outcome.model_id)
    _print_scores(outcome.reference_scores, outcome.candidate_scores)


def _print_scores(before: dict[str, float], after: dict[str, float]) -> None:
    table = Table(title="before (current release) / after (candidate)")
    for column, justify in (("metric", "left"), ("before", "right"), ("after", "right")):
        table.add_column(column, justify=justify)
    for key in (k for k in after if "/" not in k):
        table.add_row(key, f"{before[key]:.3f}" if key in before else "-", f"{after[key]:.3f}")
    out.print(table)


@app.command()
def status(workspace: WorkspaceOpt = Path(".")) -> None:
    """Show the current release and the cycle in progress with its phase."""
    ws = Workspace.open(workspace, validate=True)
    registry = ws.registry
    release = registry.get_alias()
    out.print(f"workspace: {ws.root.resolve()}")
    out.print(f"release:   {release or 'none yet (the base model becomes the first release)'}")
    generator = registry.get_alias(GENERATOR_ALIAS)
    trained = f"{generator} ({registry.get_model(generator).phase})" if generator else "none trained yet"
    out.print(f"generator: {trained} (writes the Dream phase's self-edits; see `reverie seal train`)")
    running = registry.unfinished_cycle()
    alive = ws.cycle_process_alive()
    if running is None:
        cycles = registry.list_cycles()
        last = cycles[-1] if cycles else None
        out.print("cycle:     none in progress" + (f" (last: {last.id}, {last.outcome})" if last else ""))
        return
    runs = registry.phase_runs(running.id)
    current = next((r for r in reversed(runs) if r.status == "running"), None)
    finished = [r.phase for r in runs if r.status == "finished"]
    if alive:
        phase = f"in phase {current.phase} (running for {time.time() - current.started_at:.0f}s)" if current else (
            "between phases"
        )
    else:
        stopped = f" in phase {current.phase}" if current else ""
        phase = f"interrupted{stopped} (resume with `reverie cycle --resume`)"
    out.print(f"cycle:     {running.id} {phase}; finished: {', '.join(finished) or 'none'}")
    if running.inputs:
        try:
            waiting = waiting_for_next_cycle(ws, load_inputs(ws, running))
        except ReverieError as exc:  # status still reports; the resume will refuse with the same words
            waiting = [str(exc)]
        for line in waiting:
            out.print(f"waiting:   {line}", highlight=False)


@app.command()
def history(workspace: WorkspaceOpt = Path(".")) -> None:
    """List releases and rollbacks with their key metrics, and the server's live decisions (canary, alarm)."""
    ws = Workspace.open(workspace, validate=True)
    registry = ws.registry
    cycle_of = {c.result_model_id: c.id for c in registry.list_cycles() if c.result_model_id}
    table = Table(title="release history")
    shown = ("knowledge.accuracy", "general.accuracy", "advbench.refusal")
    for column in ("when", "action", "model", *shown, "cycle"):
        table.add_column(column, no_wrap=True)
    scores = gate_scores(registry)
    for event in registry.release_events():
        s = scores.get(event.model_id, {})
        table.add_row(
            _when(event.at), event.action, event.model_id,
            *(f"{s[m]:.3f}" if m in s else "-" for m in shown),
            cycle_of.get(event.model_id, "-"),
        )
    out.print(table)
    for event in (e for e in registry.release_events() if e.reason):
        out.print(f"{event.action} of {event.model_id} on {_when(event.at)}: {event.reason}", highlight=False)
    for decision in registry.serving_decisions():
        out.print(f"{decision.action} of {decision.model_id} (against {decision.against_id}) on "
                  f"{_when(decision.at)}: {decision.reason}", highlight=False)
    rejected = [c for c in registry.list_cycles() if c.outcome == "rejected"]
    if rejected:
        out.print(f"rejected candidates: {', '.join(c.result_model_id for c in rejected)}")
    if rhythm_runs := rhythm_runs_table(registry):
        out.print(rhythm_runs)


@app.command()
def rollback(
    workspace: WorkspaceOpt = Path("."),
    to: Annotated[str, typer.Option(help="previous (the release before this one), best (the earlier release with "
                                         "the best Gate score on --metric), or the id of an earlier release.")]
    = "previous",
    metric: Annotated[Optional[str], typer.Option(help="With --to best: the Gate metric that ranks the releases, "
                                                       "e.g. knowledge.accuracy.")] = None,
) -> None:
    """Point the release back at an earlier release; why is recorded in `reverie history`."""
    from reverie.cycle import rollback as roll_back

    ws = Workspace.open(workspace, validate=True)
    previous, restored = roll_back(ws, to=to, metric=metric)
    reason = ws.registry.release_events()[-1].reason
    out.print(f"rolled back: release is now {restored} (was {previous}): {reason}", highlight=False)


@app.command()
def gc(
    workspace: WorkspaceOpt = Path("."),
    keep_candidates: Annotated[Optional[int], typer.Option(
        help="Cycles that did not release whose versions stay (default retention.keep_candidates).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be removed and the bytes freed; delete nothing.")]
    = False,
    set_: SetOpt = None,
) -> None:
    """Retention: remove the weights of candidates no release, alias or kept cycle needs, then every artifact and
    cache nothing references. Releases, their lineage and the datasets always stay."""
    from reverie.retention import collect

    ws = Workspace.open(workspace, set_ or [], validate=True)
    removal = collect(ws, keep_candidates, dry_run)
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {len(removal.models)} candidate version(s)" + (f": {', '.join(removal.models)}"
                                                                       if removal.models else ""), highlight=False)
    if removal.kept_cycles:
        out.print(f"kept the versions of {len(removal.kept_cycles)} cycle(s) that did not release: "
                  f"{', '.join(removal.kept_cycles)}", highlight=False)
    for artifact_hash, size in removal.artifacts.items():
        out.print(f"  artifact {artifact_hash[:12]}  {_megabytes(size)}", highlight=False)
    for path, size in removal.caches.items():
        out.print(f"  cache {path}  {_megabytes(size)}", highlight=False)
    if removal.staging_bytes:
        out.print(f"  staging leftovers  {_megabytes(removal.staging_bytes)}", highlight=False)
    out.print(f"{'would free' if dry_run else 'freed'} {_megabytes(removal.bytes_freed)} "
              f"({removal.bytes_freed} bytes) in {len(removal.artifacts)} artifact(s) and {len(removal.caches)} "
              "cache path(s)", highlight=False)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@app.command()
def card(model: Annotated[str, typer.Argument(help="Model id, or 'release'.")], workspace: WorkspaceOpt = Path(".")) -> None:
    """Print a model's card."""
    ws = Workspace.open(workspace, validate=True)
    record = resolve_model(ws, model)
    path = ws.cards_dir / f"{record.id}.md"
    if not path.is_file():
        raise ReverieError(f"model {record.id} has no card yet (cards are written when the Gate judges a model)")
    typer.echo(path.read_text(encoding="utf-8"), nl=False)  # verbatim: the card is a file to copy, not console output


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="Model id, or 'release'.")],
    destination: Annotated[Path, typer.Option("--out", "-o", help="New folder to write (must not exist or be empty).")],
    fmt: Annotated[str, typer.Option("--format", help="hf (a Hugging Face directory) or gguf (llama.cpp).")] = "hf",
    quant: Annotated[Optional[str], typer.Option(help="GGUF weight type: q8_0, q4_0 or q4_k_m (default: the "
                                                     "model's own GGUF, or f32).")] = None,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Export a model version with its model card: a folder transformers loads, or a GGUF file llama.cpp loads."""
    from typing import get_args

    from reverie.config import QuantFormat
    from reverie.export import export_model

    if fmt not in ("hf", "gguf"):
        raise ReverieError(f"--format {fmt!r}: use hf or gguf")
    if quant is not None and quant not in get_args(QuantFormat):
        raise ReverieError(f"--quant {quant!r}: use one of {', '.join(get_args(QuantFormat))}")
    ws = Workspace.open(workspace, validate=True)
    record = resolve_model(ws, model)
    path = export_model(ws, record, fmt, destination, quant)  # type: ignore[arg-type]
    out.print(f"exported {record.id} to {path}")


@app.command("lineage")
def lineage_command(
    model: Annotated[str, typer.Argument(help="Model id, or 'release'.")] = "release",
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """The tree from a model back to its base: each version, the datasets it added, and where they came from."""
    from rich.tree import Tree

    from reverie.model_card import lineage

    ws = Workspace.open(workspace, validate=True)
    chain = lineage(ws, resolve_model(ws, model))
    root = Tree(f"{chain[0].id} ({chain[0].status})")
    node = root
    for record, parent in zip(chain, chain[1:] + [None]):
        added = sorted(set(record.datasets) - set(parent.datasets if parent else []))
        for dataset in (ws.registry.get_dataset(h) for h in added):
            node.add(f"dataset {dataset.name} {dataset.hash[:12]}: {dataset.rows} rows, {dataset.source}")
        if parent is not None:
            node = node.add(f"{parent.id} ({parent.status}{', ' + parent.phase if parent.phase else ''})")
        elif record.source:
            node.add(f"base weights: {record.source}")
    out.print(root)


@app.command()
def report(
    output: Annotated[Path, typer.Argument(help="HTML file to write.")] = Path("reverie-report.html"),
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Write the dashboard's charts and tables as one static HTML file, for people who do not run the server."""
    from reverie.reporting.page import static_report

    ws = Workspace.open(workspace, validate=True)
    if not output.parent.is_dir():
        raise ReverieError(f"{output}: the folder {output.parent} does not exist")
    ws.write_text_atomic(output, static_report(ws))
    out.print(f"wrote {output}")


@app.command()
def serve(
    workspace: WorkspaceOpt = Path("."),
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default serve.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default serve.port).")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        envvar="REVERIE_API_KEY", help="Required on every endpoint but /health; mandatory beyond loopback.")] = None,
    set_: SetOpt = None,
) -> None:
    """Serve the current release with an OpenAI-compatible API; follows releases and rollbacks live, serves a
    canary beside it (serve.canary) and rolls back a release worse on live traffic (serve.alarm)."""
    import uvicorn

    from reverie.cycle import ensure_release
    from reverie.serving.app import check_binding, create_app
    from reverie.serving.canary import load_canary
    from reverie.serving.slot import load_for_serving

    quiet_libraries()
    ws = Workspace.open(workspace, set_ or [], validate=True)
    host, port = host or ws.config.serve.host, port or ws.config.serve.port
    check_binding(host, api_key)
    release = ensure_release(ws)
    canary = load_canary(ws, release)  # a bad serve.canary.model is said before the release loads
    served = load_for_serving(ws, ws.registry.get_model(release))
    memory = None
    if ws.config.serve.retrieval:
        from reverie.memory.retrieval import ShortTermMemory

        memory = ShortTermMemory(ws)
    out.print(f"serving {ws.root.resolve()} on http://{host}:{port}/v1 (OpenAI-compatible)"
              + (f"; canary {canary.model_id} on {ws.config.serve.canary.share:.0%} of users" if canary else ""))
    uvicorn.run(create_app(ws, served, memory, api_key, canary), host=host, port=port, log_level="warning")


def main() -> None:
    try:
        app()
    except (ReverieError, OSError) as exc:
        # soft_wrap: a long path in the message is never folded; Text: the message is not read as markup
        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        sys.exit(2)
