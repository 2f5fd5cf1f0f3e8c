"""Ingest's per-row steps on datatrove, for a pool that outgrows one machine (data.executor local, slurm or ray).

The input is cut into data.executor_tasks shards by row position (row i goes to shard i mod tasks; a shard skips
the others' rows before parsing them). Each shard runs what judges a row by itself (schema, trust, quality,
contamination) and makes the MinHash signatures of the rows it keeps, and writes every outcome with its
position to its own file, renamed into place when whole. Then this process merges the shards back into input
order and runs the dedup steps over them once, exactly as an inline ingest would, so both give the same
dataset. datatrove marks each finished shard, and a rerun after a kill runs only the rest.
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from datatrove.pipeline.base import PipelineStep

from reverie.data.dedup import SIGNATURE_SEED, ContaminationIndex, NearDuplicateIndex, Signature
from reverie.data.ingest import (CHUNK_ROWS, ROW_STEPS, Deduplicator, Outcome, PoolIndex, RowChecks, SourceSpec,
                                 StepReport, batched, step_reports)
from reverie.data.jsonl import JsonlWriter, iter_jsonl
from reverie.data.readers import read_rows
from reverie.data.records import Record, Rejected
from reverie.errors import ReverieError
from reverie.progress import status_line
from reverie.workspace import Workspace

POLL_SECONDS = 5  # how often a Slurm run's shards are checked for completion


def _shard_file(folder: Path, rank: int) -> Path:
    return folder / f"{rank:05d}.jsonl"


def _reports_file(folder: Path, rank: int) -> Path:
    return folder / f"{rank:05d}.steps.json"


class RowChecksStep(PipelineStep):
    """One shard of an input through the per-row steps, its outcomes and counts written to `folder`."""

    name = "reverie row checks"
    type = "FILTER"

    def __init__(self, path: Path, source: SourceSpec, bucket: str, min_tier: int,
                 contamination: ContaminationIndex, threshold: float, folder: Path, now: float):
        super().__init__()
        self.path, self.source, self.bucket, self.min_tier = path, source, bucket, min_tier
        self.contamination, self.threshold, self.folder, self.now = contamination, threshold, folder, now

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        reports = step_reports()
        checks = RowChecks(self.source, self.bucket, self.min_tier, self.contamination, reports, self.now)
        signer = NearDuplicateIndex(self.threshold)
        out = _shard_file(self.folder, rank)
        partial = out.with_name(out.name + ".partial")
        with JsonlWriter(partial) as writer:
            for chunk in batched(read_rows(self.path, lambda position: position % world_size == rank), CHUNK_ROWS):
                outcomes = [(row.position, checks.check(row)) for row in chunk]
                kept = [outcome for _, outcome in outcomes if isinstance(outcome, Record)]
                signatures = iter(signer.signatures([record.near_dedup_text() for record in kept]))
                for position, outcome in outcomes:
                    if isinstance(outcome, Record):
                        writer.write({"position": position, "record": outcome.model_dump(mode="json"),
                                      "signature": _encode(next(signatures))})
                    else:
                        writer.write({"position": position, "rejected": outcome.model_dump(mode="json")})
                self.stat_update("rows", value=len(chunk))
        _reports_file(self.folder, rank).write_text(json.dumps({k: asdict(reports[k]) for k in ROW_STEPS}))
        os.replace(partial, out)  # last: a shard file exists only whole, with its counts beside it


def _encode(signature: Signature) -> str:
    """A signature as text: rensa's own state bytes (no pickle, so reading a shard back runs no code)."""
    return base64.b64encode(signature.__getstate__()).decode()


def _decode(text: str, num_perm: int) -> Signature:
    signature = Signature(num_perm, SIGNATURE_SEED)
    signature.__setstate__(base64.b64decode(text))
    return signature


def _executor(ws: Workspace, step: RowChecksStep, logs: Path) -> Any:
    data = ws.config.data
    common = {"pipeline": [step], "tasks": data.executor_tasks, "logging_dir": str(logs), "skip_completed": True}
    if data.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(**common, workers=data.executor_workers, **data.executor_options)
    if data.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(**common, **data.executor_options)
    from datatrove.executor import RayPipelineExecutor

    return RayPipelineExecutor(**common, **data.executor_options)


def run_shards(ws: Workspace, path: Path, source: SourceSpec, bucket: str, contamination: ContaminationIndex,
               folder: Path) -> None:
    """Run (or finish) every shard of `path` on the configured executor; returns when all are written."""
    data = ws.config.data
    folder.mkdir(parents=True, exist_ok=True)
    step = RowChecksStep(path.resolve(), source, bucket, data.min_tier, contamination,
                         data.near_duplicate_threshold, folder, time.time())
    logs = folder / "datatrove"
    status_line(f"ingest: {data.executor_tasks} shard(s) of {path} on datatrove's {data.executor} executor "
                f"(logs in {logs})")
    try:
        _executor(ws, step, logs).run()
    except TypeError as exc:  # an executor_options key the executor does not take
        raise ReverieError(f"data.executor_options: {exc}") from None
    missing = [rank for rank in range(data.executor_tasks) if not _shard_file(folder, rank).is_file()]
    while missing and data.executor == "slurm":  # sbatch returns at once; the array job writes the shards
        time.sleep(POLL_SECONDS)
        missing = [rank for rank in missing if not _shard_file(folder, rank).is_file()]
    if missing:
        raise ReverieError(f"ingest: shard(s) {missing} of {path} did not finish; see {logs}/logs, then rerun "
                           "the same command to run only those")


def sharded_outcomes(ws: Workspace, path: Path, source: SourceSpec, bucket: str, pool: PoolIndex,
                     contamination: ContaminationIndex, reports: dict[str, StepReport],
                     folder: Path) -> Iterator[Outcome]:
    """Every outcome of a sharded ingest, in input order: the shards' own, then the dedup steps' over them."""
    run_shards(ws, path, source, bucket, contamination, folder)
    tasks = ws.config.data.executor_tasks
    for rank in range(tasks):
        for name, counts in json.loads(_reports_file(folder, rank).read_text()).items():
            report = reports[name]
            for key in ("rows_in", "kept", "removed", "quarantined"):
                setattr(report, key, getattr(report, key) + counts[key])
    dedup = Deduplicator(pool, reports)
    merged = heapq.merge(*(iter_jsonl(_shard_file(folder, rank)) for rank in range(tasks)),
                         key=lambda line: line["position"])
    for chunk in batched(merged, CHUNK_ROWS):  # the chunks an inline ingest makes, so the result is the same
        passed: list[Record] = []
        signatures: list[Signature] = []
        for line in chunk:
            if "rejected" in line:
                yield Rejected.model_validate(line["rejected"])
            else:
                passed.append(Record.model_validate(line["record"]))
                signatures.append(_decode(line["signature"], pool.near.num_perm))
        yield from dedup.chunk(passed, signatures)
