"""Feedback from serving: thumbs up/down and corrections on answers. They are appended to an inbox as they
arrive; the next Learn turns every new thumbs-down with a correction into a hard example of its replay buffer
(a dataset `replay/<cycle>/feedback`, so the release's lineage shows it), and keeps a thumbs-down without a
correction, or whose correction overlaps an evaluation item, beside it with the reason it was not trained on."""

from __future__ import annotations

import json
import os
import time
from typing import Literal

from pydantic import BaseModel, Field

from reverie.data.dedup import ContaminationIndex
from reverie.data.knowledge import Example
from reverie.data.pool import contamination_index
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

FEEDBACK_SUFFIX = "/feedback"


class Feedback(BaseModel):
    id: str
    at: float
    model_id: str
    prompt: str = Field(min_length=1)
    answer: str
    rating: Literal["up", "down"]
    correction: str | None = None


def inbox_path(ws: Workspace):
    return ws.state / "feedback" / "inbox.jsonl"


def append_feedback(ws: Workspace, row: Feedback) -> None:
    """Append durably: a row acknowledged to the user is on disk."""
    path = inbox_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(row.model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_inbox(ws: Workspace) -> list[Feedback]:
    path = inbox_path(ws)
    if not path.is_file():
        return []
    return [Feedback.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def consumed_ids(ws: Workspace) -> set[str]:
    """Feedback already in a registered replay dataset."""
    ids: set[str] = set()
    for dataset in ws.registry.list_datasets():
        if dataset.name.endswith(FEEDBACK_SUFFIX):
            lines = (ws.artifacts.path(dataset.hash) / "feedback.jsonl").read_text().splitlines()
            ids.update(json.loads(line)["id"] for line in lines)
    return ids


def untrainable(row: Feedback, contamination: ContaminationIndex) -> str | None:
    """Why a thumbs-down cannot become a training example, or None. A correction that overlaps an evaluation
    item would teach the Gate's test to anyone who can post feedback."""
    if not row.correction:
        return "thumbs-down without a correction: nothing to train towards"
    if (item := contamination.leak(f"{row.prompt} {row.correction}")) is not None:
        return f"prompt and correction overlap evaluation item {item}"
    return None


def save_feedback_replay(ws: Workspace, cycle_id: str, replay_prefix: str) -> tuple[DatasetRecord | None, list[Example]]:
    """A replay dataset of the feedback that arrived since the last one, and its training examples."""
    done = consumed_ids(ws)
    new = [row for row in read_inbox(ws) if row.id not in done and row.rating == "down"]
    if not new:
        return None, []
    contamination = contamination_index(ws)
    reasons = {row.id: reason for row in new if (reason := untrainable(row, contamination))}
    examples = [Example(prompt=row.prompt, completion=row.correction) for row in new if row.id not in reasons]
    with ws.artifacts.stage() as staged:
        (staged.path / "feedback.jsonl").write_text("".join(row.model_dump_json() + "\n" for row in new))
        (staged.path / "examples.jsonl").write_text("".join(json.dumps(e.to_json()) + "\n" for e in examples))
        (staged.path / "rejected.jsonl").write_text("".join(
            json.dumps({"id": ident, "reason": reason}) + "\n" for ident, reason in reasons.items()))
    dataset = DatasetRecord(staged.hash, f"{replay_prefix}{cycle_id}{FEEDBACK_SUFFIX}", len(examples),
                            f"serving feedback: {len(new)} thumbs-down, {len(examples)} trained on", time.time())
    return dataset, examples
