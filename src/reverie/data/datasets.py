"""Saving a training set as a content-addressed dataset, so that lineage can point at it."""

from __future__ import annotations

import json
import time

from reverie.data.knowledge import Example
from reverie.data.records import Rejected
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace


def save_dataset(workspace: Workspace, name: str, source: str, examples: list[Example]) -> DatasetRecord:
    """Write the examples as an artifact; the phase registers the record when it finishes."""
    with workspace.artifacts.stage() as staged:
        lines = (json.dumps(e.to_json(), sort_keys=True) + "\n" for e in examples)
        (staged.path / "examples.jsonl").write_text("".join(lines))
    return DatasetRecord(staged.hash, name, len(examples), source, time.time())


def save_rejected(workspace: Workspace, name: str, rows: list[Rejected]) -> DatasetRecord:
    """Write rows that were not kept, each with its reason, as a quarantine dataset."""
    with workspace.artifacts.stage() as staged:
        (staged.path / "rejected.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return DatasetRecord(staged.hash, name, len(rows), "quarantine", time.time())
