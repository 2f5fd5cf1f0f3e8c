"""Saving a training set as a content-addressed dataset, so that lineage can point at it."""

from __future__ import annotations

import time

from pydantic import BaseModel

from reverie.data.jsonl import read_jsonl, write_jsonl
from reverie.data.knowledge import Example
from reverie.data.records import Rejected
from reverie.progress import status_line
from reverie.registry import DatasetKind, DatasetRecord
from reverie.workspace import Workspace


def save_dataset(workspace: Workspace, name: str, source: str, examples: list[Example], *, kind: DatasetKind,
                 cycle_id: str | None, strategy: str | None = None) -> DatasetRecord:
    """Write the examples as an artifact; the phase registers the record when it finishes. `name` is a label
    for people; readers find the dataset by `kind` and `cycle_id`."""
    with workspace.artifacts.stage() as staged:
        write_jsonl(staged.path / "examples.jsonl", (e.to_json() for e in examples))
    return DatasetRecord(staged.hash, name, len(examples), source, time.time(), kind=kind, cycle_id=cycle_id,
                         strategy=strategy)


def load_examples(workspace: Workspace, dataset_hash: str) -> list[Example]:
    """The SFT examples of a dataset save_dataset wrote (a Learn's or a Dream's)."""
    return [Example(**row) for row in read_jsonl(workspace.artifacts.path(dataset_hash) / "examples.jsonl")]


def save_rows(workspace: Workspace, name: str, source: str, file: str, rows: list[BaseModel], *, kind: DatasetKind,
              cycle_id: str | None, strategy: str | None = None) -> DatasetRecord:
    """Write typed rows other than SFT examples (preference pairs, RL prompts) as `file` in a dataset artifact."""
    with workspace.artifacts.stage() as staged:
        write_jsonl(staged.path / file, rows)
    return DatasetRecord(staged.hash, name, len(rows), source, time.time(), kind=kind, cycle_id=cycle_id,
                         strategy=strategy)


def save_rejected(workspace: Workspace, name: str, rows: list[Rejected], *, kind: DatasetKind, cycle_id: str | None,
                  strategy: str | None = None) -> DatasetRecord:
    """Write rows that were not kept, each with its reason, as a dataset a reviewer can read (Dream's quarantine)."""
    with workspace.artifacts.stage() as staged:
        write_jsonl(staged.path / "rejected.jsonl", rows)
    return DatasetRecord(staged.hash, name, len(rows), "quarantine", time.time(), kind=kind, cycle_id=cycle_id,
                         strategy=strategy)


def remove_orphans(workspace: Workspace) -> None:
    """Remove what an ingest or import killed mid-write left behind. Call it with the cycle lock held: then, if
    no cycle waits to resume (a resume cleans up after itself), every artifact nothing references is an orphan."""
    if workspace.registry.unfinished_cycle() is None:
        if removed := workspace.artifacts.collect_garbage(workspace.registry.referenced_artifacts()):
            status_line(f"removed {len(removed)} artifact(s) that an interrupted write left behind")
