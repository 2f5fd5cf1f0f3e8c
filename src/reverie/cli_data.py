"""`reverie data ...`: ingest files into the workspace's data pool (or as preference pairs) and inspect them."""

from __future__ import annotations

from collections import Counter
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Annotated, Callable

import typer
from rich.markup import escape
from rich.table import Table

from reverie.progress import results
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

data_app = typer.Typer(help="The data pool and preference pairs: ingest with provenance, dedup and contamination "
                       "checks; statistics.",
                       no_args_is_help=True)
redteam_app = typer.Typer(help="The red-team library: versioned must-refuse and must-answer prompts.",
                          no_args_is_help=True)
data_app.add_typer(redteam_app, name="redteam")
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]
out = results


class Kind(str, Enum):
    """What `reverie data ingest` reads a file as."""

    pool = "pool"
    preference = "preference"


@data_app.command("ingest")
def ingest_command(
    path: Annotated[Path, typer.Argument(help="A .jsonl, .csv or .parquet file, or a folder of .txt / .md files.")],
    source: Annotated[str, typer.Option(help="The source it comes from: a name under data.sources.")],
    workspace: WorkspaceOpt = Path("."),
    bucket: Annotated[str, typer.Option(help="Task bucket for rows that do not name one.")] = "general",
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file name).")] = None,
    kind: Annotated[Kind, typer.Option(help="pool: SFT records ({text} or {prompt, completion}); preference: "
                                       "pairs ({prompt, chosen, rejected, margin?}, TRL's standard or "
                                       "conversational format).")] = Kind.pool,
) -> None:
    """Ingest a file or folder: schema, trust, contamination, exact and near-duplicate checks against the pool
    (or, for preference pairs, the prompt length too, against every preference dataset). Every row that is not
    kept is stored with its reason; the counts of every step are printed."""
    ws = Workspace.open(workspace, validate=True)
    if kind is Kind.preference:
        from reverie.data.preference_ingest import ingest_preference_path

        dataset, result = ingest_preference_path(ws, path, source, bucket, name, _prompt_tokens(ws))
    else:
        from reverie.data.pool import ingest_path

        dataset, result = ingest_path(ws, path, source, bucket, name)
    table = Table(title=f"ingest {path} -> {dataset.name} ({dataset.hash[:12]})")
    for column in ("step", "rows in", "kept", "removed", "quarantined"):
        table.add_column(column, justify="right" if column != "step" else "left")
    for step in result.steps:
        table.add_row(step.step, str(step.rows_in), str(step.kept), str(step.removed), str(step.quarantined))
    out.print(table)
    for rejected in result.rejected[:10]:
        out.print(escape(f"  {rejected.origin}: {rejected.step}: {rejected.reason}"), highlight=False)
    if (total := sum(step.removed + step.quarantined for step in result.steps)) > 10:
        out.print(f"  ... {total - 10} more in {ws.artifacts.path(dataset.hash) / 'rejected.jsonl'}")


def _prompt_tokens(ws: Workspace) -> Callable[[str], int]:
    """Counts a prompt's tokens with the workspace model's tokenizer (the data layer stays torch-free). The
    tokenizer loads at the first prompt, so that a wrong --source or an empty file is reported without it."""

    @cache
    def tokenizer():
        from transformers import AutoTokenizer

        from reverie.engines.models import resolve_source

        directory = resolve_source(ws.config.model.source, ws.cache_dir, ws.root)
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=ws.config.model.trust_remote_code)

    def count(text: str) -> int:
        from reverie.engines.prompts import token_counter

        return token_counter(tokenizer())(text)

    return count


@data_app.command()
def stats(
    workspace: WorkspaceOpt = Path("."),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: KEY=VALUE.")] = None,
) -> None:
    """The pool's datasets with their step counts, kept records per bucket, source and tier, and data.mix; then
    the preference datasets and their pairs per bucket, source and split, if there are any."""
    from reverie.data.pool import pool_datasets, pool_stats
    from reverie.data.preference import preference_datasets, preference_stats

    ws = Workspace.open(workspace, set_ or [], validate=True)
    out.print(_datasets_table(ws, "datasets in the pool", pool_datasets(ws)))
    stats = pool_stats(ws)
    _print_counts(stats, "records")
    mix = ws.config.data.mix
    if mix:
        total = sum(mix.values()) or 1.0
        table = Table(title=f"data.mix: each Learn draws {ws.config.learn.pool_records} records (learn.pool_records)")
        for column in ("bucket", "share", "records available", "note"):
            table.add_column(column)
        for bucket in sorted(mix.keys() | stats["bucket"].keys()):
            available = stats["bucket"].get(bucket, 0)
            share = mix.get(bucket, 0.0) / total
            note = "empty: its share goes to the others" if share and not available else (
                "" if share else "not in data.mix: never drawn")
            table.add_row(bucket, f"{share:.0%}", str(available), note)
        out.print(table)
    if preferences := preference_datasets(ws):
        out.print(_datasets_table(ws, "preference datasets", preferences))
        _print_counts(preference_stats(ws), "pairs")


def _datasets_table(ws: Workspace, title: str, datasets: list[DatasetRecord]) -> Table:
    from reverie.data.pool import manifest

    table = Table(title=title)
    for column in ("dataset", "hash", "kept", "removed", "quarantined", "source"):
        table.add_column(column, no_wrap=True)
    for dataset in datasets:
        steps = manifest(ws, dataset)["steps"]
        table.add_row(dataset.name, dataset.hash[:12], str(dataset.rows), str(sum(s["removed"] for s in steps)),
                      str(sum(s["quarantined"] for s in steps)), dataset.source)
    return table


def _print_counts(stats: dict[str, Counter], unit: str) -> None:
    for key, counts in stats.items():
        table = Table(title=f"kept {unit} per {key}")
        table.add_column(key)
        table.add_column(unit, justify="right")
        for value, count in sorted(counts.items()):
            table.add_row(value, str(count))
        out.print(table)


@data_app.command()
def review(
    dataset: Annotated[str, typer.Argument(help="Dataset name or hash prefix (see `reverie lineage`).")],
    workspace: WorkspaceOpt = Path("."),
    sample: Annotated[int, typer.Option(min=1, help="Rows to review.")] = 20,
    seed: Annotated[int, typer.Option(help="Which rows: the sample is seeded.")] = 0,
) -> None:
    """Spot-check a seeded sample of a dataset's rows: accept (a) or reject (r) each; q stops without saving."""
    from reverie.data.review import Decision, dataset_rows, find_dataset, sample_rows, save_review
    from reverie.errors import ReverieError

    ws = Workspace.open(workspace, validate=True)
    record = find_dataset(ws, dataset)
    rows = dataset_rows(ws, record)
    if not rows:
        raise ReverieError(f"dataset {record.name} has no rows to review")
    picked = sample_rows(len(rows), sample, seed)
    decisions = []
    for number, index in enumerate(picked, start=1):
        out.rule(f"{record.name}: row {index} ({number} of {len(picked)})")
        out.print(rows[index], highlight=False, markup=False)
        answer = typer.prompt("accept, reject or quit? [a/r/q]").strip().lower()
        while answer not in ("a", "r", "q"):
            answer = typer.prompt("please answer a, r or q").strip().lower()
        if answer == "q":
            raise typer.Exit(1)
        decisions.append(Decision(row=index, accepted=answer == "a"))
    saved = save_review(ws, record, decisions)
    out.print(f"review of {record.name} ({record.hash[:12]}) saved: {saved.acceptance:.0%} of {len(decisions)} "
              "rows accepted")


@data_app.command()
def dedup(
    workspace: WorkspaceOpt = Path("."),
    threshold: Annotated[
        float | None, typer.Option(min=0.01, max=1.0, help="Jaccard threshold (default data.near_duplicate_threshold).")
    ] = None,
) -> None:
    """Re-check the whole pool for near duplicates (for example at a new threshold); changes nothing."""
    from reverie.data.dedup import NearDuplicateIndex
    from reverie.data.pool import load_records, pool_datasets

    ws = Workspace.open(workspace, validate=True)
    index = NearDuplicateIndex(threshold or ws.config.data.near_duplicate_threshold)
    records = [r for d in pool_datasets(ws) for r in load_records(ws, d)]
    by_id = {r.id: r for r in records}
    pairs = []
    for record, signature in zip(records, index.signatures([r.near_dedup_text() for r in records])):
        match = index.match(signature)
        if match is None:
            index.add(record.id, signature)
        else:
            pairs.append((record, by_id[match]))
    out.print(f"{len(records)} records in the pool; {len(pairs)} near duplicate(s) at threshold {index.threshold}")
    for record, original in pairs[:20]:
        out.print(f"  {record.provenance.origin} ~ {original.provenance.origin}", highlight=False)


@data_app.command()
def replay(workspace: WorkspaceOpt = Path(".")) -> None:
    """The hard examples waiting to be replayed: each Gate's failures, with their age and current weight."""
    from reverie.data.replay import replay_ages

    ws = Workspace.open(workspace, validate=True)
    decay = ws.config.learn.replay_decay
    table = Table(title=f"replay (at most {ws.config.learn.replay_share:.0%} of each Learn, decay {decay})")
    for column in ("dataset", "hash", "examples", "age (cycles)", "weight", "source"):
        table.add_column(column, no_wrap=True)
    for dataset, age in reversed(replay_ages(ws)):
        table.add_row(dataset.name, dataset.hash[:12], str(dataset.rows), str(age), f"{decay ** age:.3g}",
                      dataset.source)
    out.print(table)


@redteam_app.command("import")
def redteam_import(
    path: Annotated[Path, typer.Argument(help="The file to import.")],
    format_: Annotated[str, typer.Option("--format", help="advbench (CSV goal,target), xstest (CSV prompt,type,"
                                         "label) or jsonl ({prompt, must_refuse, category?}).")],
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Add a file's items to the library as a new version (the weekly refresh); known prompts are not repeated."""
    from reverie.data.redteam import import_items, read_items

    ws = Workspace.open(workspace, validate=True)
    dataset, new = import_items(ws, read_items(path, format_))
    if dataset is None:
        out.print(f"nothing new in {path.name}: the library stays as it is")
    else:
        out.print(f"{dataset.name} ({dataset.hash[:12]}): {dataset.rows} items, {new} new from {path.name}")


@redteam_app.command("stats")
def redteam_stats(workspace: WorkspaceOpt = Path(".")) -> None:
    """Coverage of every library version (its categories, the share of them the safety suites can score, its
    machine-generated attacks and how many await review), then of the newest version per category."""
    from reverie.data.redteam import coverage, load_library, version_coverage

    ws = Workspace.open(workspace, validate=True)
    versions = version_coverage(ws)
    table = Table(title="red-team library versions: coverage")
    for column in ("version", "hash", "must refuse", "must answer", "categories", "with held-out items",
                   "generated", "awaiting review", "source"):
        table.add_column(column, justify="left" if column in ("version", "hash", "source") else "right")
    for row in versions:
        table.add_row(row.version.name, row.version.hash[:12], str(row.must_refuse), str(row.must_answer),
                      str(row.categories), f"{row.held_out_coverage:.0%}", str(row.generated),
                      str(row.pending_review), escape(row.version.source))
    out.print(table)
    table = Table(title=f"red-team library {versions[-1].version.name if versions else '(empty)'}: coverage per "
                  "category")
    for column in ("category", "must refuse", "must answer"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for category, (refuse, answer) in coverage(load_library(ws)).items():
        table.add_row(category, str(refuse), str(answer))
    out.print(table)


@redteam_app.command("curate")
def redteam_curate(
    version: Annotated[str, typer.Argument(help="A library version that Dream's red-team self-play wrote "
                                           "(redteam/vN), reviewed with `reverie data review`.")],
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Apply the review of a machine-generated version: accepted attacks stay in the library, rejected ones leave
    it, unreviewed ones stay pending; the result is a new version."""
    from reverie.data.redteam import curate

    ws = Workspace.open(workspace, validate=True)
    result = curate(ws, version)
    counts = f"{result.accepted} accepted, {result.rejected} rejected, {result.unreviewed} not reviewed"
    if result.version is None:
        out.print(f"{version}: {counts}; the library stays as it is")
    else:
        out.print(f"{result.version.name} ({result.version.hash[:12]}): {result.version.rows} items ({counts})")


@redteam_app.command("pairs")
def redteam_pairs(
    output: Annotated[Path, typer.Argument(help="JSONL to write: {prompt, completion} refusal pairs.")],
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Write refusal training pairs for every must-refuse item outside the held-out half (the Gate's safety
    suites); ingest them with `reverie data ingest FILE --source team --bucket safety`."""
    from reverie.data.jsonl import jsonl_text
    from reverie.data.redteam import load_library, refusal_pairs
    from reverie.data.splits import in_safety_held_out
    from reverie.errors import ReverieError

    ws = Workspace.open(workspace, validate=True)
    if not output.parent.is_dir():
        raise ReverieError(f"{output}: the folder {output.parent} does not exist")
    library = load_library(ws)
    pairs = refusal_pairs(library)
    ws.write_text_atomic(output, jsonl_text(p.to_json() for p in pairs))
    kept_back = sum(item.must_refuse and in_safety_held_out(item.id) for item in library)
    out.print(f"wrote {len(pairs)} refusal pairs to {output} ({kept_back} held out for the safety suites)")
