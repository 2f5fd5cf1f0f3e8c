"""Passages with questions, in the SEAL repository's SQuAD format: [{title, context, questions: [{question,
answer}], completions?}]. `completions` (optional) holds teacher-written self-edits such as GPT-4.1's."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from reverie.data.knowledge import QA, Knowledge
from reverie.data.splits import knowledge_held_out, knowledge_train
from reverie.errors import ReverieError


class Passage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    title: str = Field(min_length=1)
    context: str = Field(min_length=1)
    questions: list[QA] = Field(min_length=1)
    completions: list[str] = Field(default_factory=list)

    def qa_pairs(self) -> list[tuple[str, str]]:
        return [(q.question, q.answer) for q in self.questions]


def load_passages(path: Path) -> list[Passage]:
    """Read a passages file; a malformed passage is reported with its index and field."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReverieError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReverieError(f"{path}: not a JSON file ({exc})") from None
    try:
        return TypeAdapter(list[Passage]).validate_python(raw)
    except ValidationError as exc:
        problems = [f"  [{']['.join(str(p) for p in e['loc'])}]: {e['msg']}" for e in exc.errors()[:10]]
        raise ReverieError(f"{path}: {exc.error_count()} problem(s)\n" + "\n".join(problems)) from None


def knowledge_passages(knowledge: Knowledge, split: str) -> list[Passage]:
    """A knowledge drop's documents as passages, with their training or held-out questions (data/splits.py)."""
    items = knowledge_train(knowledge) if split == "train" else knowledge_held_out(knowledge)
    questions: dict[str, list[QA]] = {}
    for doc, qa in items:
        questions.setdefault(doc.id, []).append(qa)
    return [Passage(title=doc.title, context=doc.text, questions=questions[doc.id])
            for doc in knowledge.documents if doc.id in questions]
