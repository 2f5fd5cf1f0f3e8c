"""Human spot checks of a dataset: a reviewer accepts or rejects a seeded sample of its rows in the terminal,
and the Gate can be configured (gate.require_review) to release nothing trained on unreviewed synthetic data.

Reviews are stored per dataset hash under .reverie/reviews/, written atomically.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from pydantic import BaseModel

from reverie.data.jsonl import read_jsonl
from reverie.errors import ReverieError
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

ROW_FILES = ("examples.jsonl", "records.jsonl", "rejected.jsonl")


class Decision(BaseModel):
    row: int  # index into the dataset's rows
    accepted: bool


class Review(BaseModel):
    dataset: str  # hash
    name: str
    decisions: list[Decision]
    at: float

    @property
    def acceptance(self) -> float:
        return sum(d.accepted for d in self.decisions) / max(1, len(self.decisions))


def find_dataset(ws: Workspace, key: str) -> DatasetRecord:
    """A dataset by exact name (the newest of that name) or by a hash prefix of at least 6 characters."""
    datasets = ws.registry.list_datasets()
    named = [d for d in datasets if d.name == key]
    if named:
        return named[-1]
    matches = [d for d in datasets if len(key) >= 6 and d.hash.startswith(key)]
    if len(matches) == 1:
        return matches[0]
    hint = ", ".join(d.name for d in datasets[-5:]) or "none yet"
    problem = "matches several datasets" if matches else "is neither a dataset name nor a hash prefix (6+ characters)"
    raise ReverieError(f"dataset {key!r} {problem} (recent: {hint})")


def dataset_rows(ws: Workspace, dataset: DatasetRecord) -> list[str]:
    """Each row of a stored dataset as the text a reviewer reads."""
    folder = ws.artifacts.path(dataset.hash)
    path = next((folder / name for name in ROW_FILES if (folder / name).is_file()), None)
    if path is None:
        raise ReverieError(f"dataset {dataset.name} has no rows file ({', '.join(ROW_FILES)})")
    rows = []
    for row in read_jsonl(path):
        if row.get("prompt") and row.get("completion"):
            rows.append(f"PROMPT: {row['prompt']}\nCOMPLETION: {row['completion']}")
        else:
            rows.append(row.get("text") or row.get("completion") or json.dumps(row.get("row", row)))
    return rows


def sample_rows(count: int, size: int, seed: int) -> list[int]:
    """Which rows a review of `size` covers, in order; the same for the same seed."""
    return sorted(random.Random(seed).sample(range(count), min(size, count)))


def review_path(ws: Workspace, dataset: DatasetRecord) -> Path:
    return ws.state / "reviews" / f"{dataset.hash}.json"


def load_review(ws: Workspace, dataset: DatasetRecord) -> Review | None:
    """The saved review of a dataset, if there is one."""
    path = review_path(ws, dataset)
    return Review.model_validate_json(path.read_text()) if path.is_file() else None


def save_review(ws: Workspace, dataset: DatasetRecord, decisions: list[Decision]) -> Review:
    """Store a review, replacing any earlier one of the same dataset."""
    review = Review(dataset=dataset.hash, name=dataset.name, decisions=decisions, at=time.time())
    ws.write_text_atomic(review_path(ws, dataset), review.model_dump_json(indent=2) + "\n")
    return review
