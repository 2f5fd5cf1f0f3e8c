"""Every text the workspace has trained on or may train on, read one at a time, so that an evaluation can leave
out any item a training set contains (the redteam suite does: data/redteam.untrained).

A training set is any dataset of a kind that trains (the pool, Learn's and Dream's data, replay, feedback,
preference pairs) and any dataset in a model's lineage; quarantined rows and red-team library versions are not
training sets (the library's training half is trained on only through the datasets made from it)."""

from __future__ import annotations

from collections.abc import Iterator

from reverie.data.jsonl import iter_jsonl
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

TRAINING_KINDS = ("pool", "learn", "dream", "replay", "feedback", "preference")
ROW_FILES = ("records.jsonl", "examples.jsonl", "pairs.jsonl", "prompts.jsonl")
TEXT_FIELDS = ("text", "prompt", "completion", "chosen", "rejected")


def training_datasets(ws: Workspace) -> list[DatasetRecord]:
    """Every dataset that trains or trained a model, oldest first."""
    lineage = {h for model in ws.registry.list_models() for h in model.datasets}
    return [d for d in ws.registry.list_datasets() if d.kind in TRAINING_KINDS or d.hash in lineage]


def training_texts(ws: Workspace) -> Iterator[str]:
    """Each text field of each row of every training set (a chat prompt as its messages' contents)."""
    for dataset in training_datasets(ws):
        folder = ws.artifacts.path(dataset.hash)
        for name in ROW_FILES:
            if (folder / name).is_file():
                for row in iter_jsonl(folder / name):
                    yield from _texts(row)


def _texts(row: object) -> Iterator[str]:
    if not isinstance(row, dict):
        return
    for field in TEXT_FIELDS:
        value = row.get(field)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):  # conversational prompt: [{role, content}, ...]
            yield "\n".join(m["content"] for m in value if isinstance(m, dict) and isinstance(m.get("content"), str))
