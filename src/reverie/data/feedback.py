"""Feedback from serving: thumbs up/down and corrections on answers. They are appended to an inbox as they
arrive; the next Learn turns every new thumbs-down with a correction into a hard example of its replay buffer
(a dataset of kind "feedback" with its cycle, so the release's lineage shows it), and keeps a thumbs-down without a
correction, or whose correction overlaps an evaluation item, beside it with the reason it was not trained on."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field
from rich.markup import escape

from reverie.data.dedup import ContaminationIndex
from reverie.data.jsonl import BadLine, append_jsonl, read_jsonl, scan_jsonl, write_jsonl
from reverie.data.knowledge import Example
from reverie.data.pool import contamination_index
from reverie.data.replay import REPLAY_PREFIX
from reverie.data.text import UnicodeText
from reverie.progress import status_line
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace


class Feedback(BaseModel):
    id: str
    at: float
    model_id: str
    prompt: UnicodeText = Field(min_length=1)
    answer: UnicodeText
    rating: Literal["up", "down"]
    correction: UnicodeText | None = None


def inbox_path(ws: Workspace):
    return ws.state / "feedback" / "inbox.jsonl"


def append_feedback(ws: Workspace, row: Feedback) -> None:
    """Append durably: a row acknowledged to the user is on disk."""
    append_jsonl(inbox_path(ws), row)


def read_inbox(ws: Workspace) -> tuple[list[Feedback], list[BadLine]]:
    """The feedback rows, and the lines that are not one (a torn append, a hand edit): those are reported and
    skipped, so that one bad line does not stop every later Learn."""
    return scan_jsonl(inbox_path(ws), Feedback.model_validate)


def consumed_ids(ws: Workspace) -> set[str]:
    """Feedback already in a registered replay dataset."""
    ids: set[str] = set()
    for dataset in ws.registry.list_datasets(kind="feedback"):
        ids.update(row["id"] for row in read_jsonl(ws.artifacts.path(dataset.hash) / "feedback.jsonl"))
    return ids


def untrainable(row: Feedback, contamination: ContaminationIndex) -> str | None:
    """Why a thumbs-down cannot become a training example, or None. A correction that overlaps an evaluation
    item would teach the Gate's test to anyone who can post feedback."""
    if not row.correction:
        return "thumbs-down without a correction: nothing to train towards"
    if (item := contamination.leak(f"{row.prompt} {row.correction}")) is not None:
        return f"prompt and correction overlap evaluation item {item}"
    return None


def pending_feedback(ws: Workspace) -> tuple[list[Feedback], list[BadLine]]:
    """The thumbs-down rows no replay dataset holds yet (what the next Learn takes), and the inbox lines that
    are not a row."""
    done = consumed_ids(ws)
    rows, bad = read_inbox(ws)
    return [row for row in rows if row.id not in done and row.rating == "down"], bad


def report_unreadable(bad: list[BadLine]) -> None:
    for line in bad:  # left in the inbox as they are: a person can mend them, and nothing is lost
        status_line(escape(f"feedback skipped: {line}"))


def save_feedback_replay(ws: Workspace, cycle_id: str, new: list[Feedback],
                         ) -> tuple[DatasetRecord | None, list[Example]]:
    """A replay dataset of `new` feedback (the cycle's frozen pending rows) and its training examples; its label
    is `<REPLAY_PREFIX><cycle>/feedback`."""
    if not new:
        return None, []
    contamination = contamination_index(ws)
    reasons = {row.id: reason for row in new if (reason := untrainable(row, contamination))}
    examples = [Example(prompt=row.prompt, completion=row.correction) for row in new if row.id not in reasons]
    with ws.artifacts.stage() as staged:
        write_jsonl(staged.path / "feedback.jsonl", new)
        write_jsonl(staged.path / "examples.jsonl", (e.to_json() for e in examples))
        write_jsonl(staged.path / "rejected.jsonl",
                    ({"id": ident, "reason": reason} for ident, reason in reasons.items()))
    dataset = DatasetRecord(staged.hash, f"{REPLAY_PREFIX}{cycle_id}/feedback", len(examples),
                            f"serving feedback: {len(new)} thumbs-down, {len(examples)} trained on", time.time(),
                            kind="feedback", cycle_id=cycle_id)
    return dataset, examples
