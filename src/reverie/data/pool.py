"""The workspace's data pool: every ingested dataset, stored as a content-addressed artifact and registered.

An ingested dataset's artifact holds `records.jsonl` (kept records with provenance), `rejected.jsonl` (every
row not kept, with its step and reason) and `manifest.json` (the input, its source, and each step's counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from reverie.data.datasets import remove_orphans
from reverie.data.dedup import ContaminationIndex
from reverie.data.ingest import PoolIndex, SourceSpec, StepReport, screen, step_reports
from reverie.data.jsonl import JsonlWriter, iter_jsonl
from reverie.data.knowledge import Example, load_knowledge
from reverie.data.mixing import BucketStats, mix_sample
from reverie.data.multiple_choice import load_choice_items
from reverie.data.preference import load_preference_prompts
from reverie.data.readers import folder_files, read_rows
from reverie.data.records import Record, Rejected
from reverie.data.splits import exclusion_texts
from reverie.errors import ReverieError
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

NAME_PATTERN = "letters, digits, '_', '.', '-'"


def pool_datasets(ws: Workspace) -> list[DatasetRecord]:
    """The ingested datasets, oldest first."""
    return ws.registry.list_datasets(kind="pool")


def load_records(ws: Workspace, dataset: DatasetRecord) -> list[Record]:
    """The kept records of an ingested dataset."""
    return list(iter_records(ws, dataset))


def iter_records(ws: Workspace, dataset: DatasetRecord) -> Iterator[Record]:
    """The kept records of an ingested dataset, one at a time (a dataset may be larger than memory)."""
    return iter_jsonl(ws.artifacts.path(dataset.hash) / "records.jsonl", Record.model_validate)


def manifest(ws: Workspace, dataset: DatasetRecord) -> dict:
    """What an ingest read, from which source, and each step's counts."""
    return json.loads((ws.artifacts.path(dataset.hash) / "manifest.json").read_text())


def evaluation_items(ws: Workspace) -> dict[str, str]:
    """Everything the Gate scores, keyed for reports (held-out questions with answers, general-suite goals,
    preference-suite prompts): for leak checks only (data/splits.py)."""
    config = ws.config
    knowledge = load_knowledge(config.data.knowledge, ws.root)
    general = load_choice_items(config.eval.general_suite, ws.root, config.eval.general_limit)
    prompts = (load_preference_prompts(config.eval.preference_prompts, ws.root, config.eval.preference_limit)
               if "preference" in config.eval.suites else [])
    return exclusion_texts(knowledge, general, prompts)


def contamination_index(ws: Workspace) -> ContaminationIndex:
    """The evaluation items as they are now, indexed for leak checks."""
    return ContaminationIndex(evaluation_items(ws), ws.config.data.contamination_span)


def source_spec(ws: Workspace, name: str) -> SourceSpec:
    """A source named in data.sources; any other name is refused."""
    sources = ws.config.data.sources
    if name not in sources:
        known = ", ".join(sources) or "none: declare them under data.sources in reverie.yaml"
        raise ReverieError(f"--source {name!r} is not in data.sources (known: {known})")
    return SourceSpec(name, sources[name].tier, sources[name].licence, sources[name].synthetic)


INGEST_STATE = "ingest"  # under .reverie/: one folder per input being ingested, kept until it is registered
SHOWN_REJECTED = 10


@dataclass
class IngestSummary:
    """What an ingest did: each step's counts, and the first rejected rows (all of them are in the dataset)."""

    steps: list[StepReport]
    kept: int
    rejected: list[Rejected]


def ingest_path(ws: Workspace, path: Path, source: str, bucket: str, name: str | None = None,
                ) -> tuple[DatasetRecord, IngestSummary]:
    """Ingest one file or folder into the pool, deduplicated against everything already there.

    Outcomes stream to files in a work folder (.reverie/ingest/, keyed by the input and the checks), so memory
    holds one chunk of rows plus the dedup index; the dataset is registered once it is whole. With data.executor
    other than inline, datatrove runs the per-row steps over shards first (data/ingest_shards.py), and a rerun
    after a kill reuses the shards that finished."""
    name = name or path.stem
    if not name or any(not (c.isalnum() or c in "_.-") for c in name):
        raise ReverieError(f"dataset name {name!r}: use {NAME_PATTERN}")
    spec = source_spec(ws, source)
    data = ws.config.data
    if not path.exists():
        raise ReverieError(f"{path} does not exist")
    input_hash = _input_hash(path)
    items = evaluation_items(ws)
    contamination = ContaminationIndex(items, data.contamination_span)
    key = hashlib.sha256(json.dumps([input_hash, str(path.resolve()), spec.__dict__, bucket, data.min_tier,
                                     data.contamination_span, sorted(items.items()), data.executor,
                                     data.executor_tasks], sort_keys=True).encode()).hexdigest()
    work = ws.state / INGEST_STATE / key[:16]
    work.mkdir(parents=True, exist_ok=True)
    pool = PoolIndex.build((r for d in pool_datasets(ws) for r in iter_records(ws, d)), data.near_duplicate_threshold)
    reports = step_reports()
    if data.executor == "inline":
        outcomes = screen(read_rows(path), spec, bucket, pool, data.min_tier, contamination, reports)
    else:
        try:
            from reverie.data.ingest_shards import sharded_outcomes
        except ImportError as exc:
            raise ReverieError(f"data.executor {data.executor} runs on datatrove, which is not installed here "
                               f"({exc}): pip install 'reverie[scale]', or use data.executor inline") from None
        outcomes = sharded_outcomes(ws, path, spec, bucket, pool, contamination, reports, work / "shards")
    shown: list[Rejected] = []
    with JsonlWriter(work / "records.jsonl") as kept, JsonlWriter(work / "rejected.jsonl") as rejected:
        for outcome in outcomes:
            if isinstance(outcome, Record):
                kept.write(outcome)
            else:
                rejected.write(outcome)
                if len(shown) < SHOWN_REJECTED:
                    shown.append(outcome)
    steps = list(reports.values())
    if steps[0].rows_in == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ReverieError(f"{path}: no rows to ingest (an empty file, or a folder without .txt / .md files); "
                           "nothing was registered")
    (work / "manifest.json").write_text(json.dumps({
        "input": str(path.resolve()), "input_sha256": input_hash, "source": spec.__dict__, "bucket": bucket,
        "executor": data.executor, "steps": [s.__dict__ for s in steps],
    }, indent=2) + "\n")
    with ws.cycle_lock():  # a cycle's garbage collection must not see the artifact before it is registered
        remove_orphans(ws)
        with ws.artifacts.stage() as staged:
            for file in ("records.jsonl", "rejected.jsonl", "manifest.json"):
                os.replace(work / file, staged.path / file)
        dataset = DatasetRecord(staged.hash, f"pool/{name}", kept.rows,
                                f"ingest {path.name} from {source} (tier {spec.tier}, {spec.licence})", time.time(),
                                kind="pool", cycle_id=None)
        ws.registry.add_dataset(dataset)
    shutil.rmtree(work, ignore_errors=True)
    return dataset, IngestSummary(steps, kept.rows, shown)


def _input_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = folder_files(path)[0] if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class PoolDraw:
    examples: list[Example]
    datasets: list[str]  # hashes of the pool datasets the drawn records came from
    buckets: list[BucketStats]
    contaminated: int = 0  # records skipped: they overlap the current evaluation items


def draw_for_learn(ws: Workspace, seed: int, datasets: list[str]) -> PoolDraw:
    """learn.pool_records records from the pool datasets `datasets` (the cycle's frozen list), mixed by data.mix
    and weighted by trust tier."""
    count = ws.config.learn.pool_records
    if count == 0:
        return PoolDraw([], [], [])
    # Ingest checked each record against the evaluation items of its day; these may have changed since.
    contamination = contamination_index(ws)
    origin: dict[str, str] = {}
    records: list[Record] = []
    contaminated = 0
    for dataset in (ws.registry.get_dataset(h) for h in datasets):
        for record in load_records(ws, dataset):
            if contamination.leak(record.content()) is not None:
                contaminated += 1
                continue
            origin.setdefault(record.id, dataset.hash)
            records.append(record)
    if not records:
        raise ReverieError("learn.pool_records is set but the data pool has no usable record (see `reverie data "
                           "ingest` and `reverie data stats`)")
    mix = ws.config.data.mix or dict(Counter(r.bucket for r in records))
    drawn, buckets = mix_sample(records, mix, count, ws.config.data.tier_weight, seed)
    if not drawn:
        present = ", ".join(sorted({r.bucket for r in records}))
        raise ReverieError(f"data.mix gives no share to a bucket the pool has (the pool has: {present})")
    return PoolDraw([r.example() for r in drawn], sorted({origin[r.id] for r in drawn}), buckets, contaminated)


def pool_stats(ws: Workspace) -> dict[str, Counter]:
    """Kept records per bucket, source and tier, over the whole pool."""
    stats = {"bucket": Counter(), "source": Counter(), "tier": Counter()}
    for dataset in pool_datasets(ws):
        for record in iter_records(ws, dataset):
            stats["bucket"][record.bucket] += 1
            stats["source"][record.provenance.source] += 1
            stats["tier"][str(record.provenance.tier)] += 1
    return stats
