"""Knowledge drops: documents with training questions and held-out evaluation questions (their splits:
data/splits.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reverie.data.files import read_data_text
from reverie.data.text import UnicodeText
from reverie.errors import ReverieError
from reverie.validation import describe_errors, nearest, parse_yaml


class QA(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: UnicodeText = Field(min_length=1)
    answer: UnicodeText = Field(min_length=1)


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    title: UnicodeText = Field(min_length=1)
    text: UnicodeText = Field(min_length=1)
    train_qa: list[QA] = Field(default_factory=list)
    eval_qa: list[QA] = Field(default_factory=list)


class Knowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    documents: list[Document] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_questions(self) -> Knowledge:
        if not any(doc.train_qa for doc in self.documents):
            raise ValueError("no document has train_qa: Learn and Dream need training questions")
        if not any(doc.eval_qa for doc in self.documents):
            raise ValueError("no document has eval_qa: the Gate needs held-out questions to measure recall")
        return self


@dataclass(frozen=True)
class Example:
    """One training example: a chat prompt and its completion, or plain text when prompt is None. A chat example
    is trained on its completion only unless `loss_on_prompt` (a SEAL ARC self-edit's "all tokens" strategy)."""

    completion: str
    prompt: str | None = None
    loss_on_prompt: bool = False

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "completion": self.completion}


def load_knowledge(spec: str, base_dir: Path) -> Knowledge:
    """Load 'demo' (built in) or a knowledge JSON file; every problem is reported at once, naming the file,
    the field's JSON path (documents.3.train_qa.0.answer) and its line."""
    text, origin = read_data_text(
        spec, base_dir, "data.knowledge", ("demo", "demo/knowledge.json"), "a knowledge JSON file"
    )
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReverieError(f"{origin}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    try:
        return Knowledge.model_validate(raw)
    except ValidationError as exc:
        lines = _json_lines(text)
        problems = describe_errors(exc, Knowledge, lambda loc: f"line {line}" if (line := nearest(lines, loc)) else "")
        raise ReverieError(f"{origin}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)) from None


def _json_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of each JSON path: JSON is YAML, and a YAML node knows its line where a json value does not.
    Only called for a file with problems; one that YAML cannot read goes without lines."""
    try:
        return parse_yaml(text)[1]
    except yaml.YAMLError:
        return {}


def learn_examples(knowledge: Knowledge) -> list[Example]:
    """Learn's mix: each document as plain text, plus its training questions as chat examples."""
    examples = [Example(completion=f"{doc.title}\n{doc.text}") for doc in knowledge.documents]
    examples += [Example(prompt=qa.question, completion=qa.answer)
                 for doc in knowledge.documents for qa in doc.train_qa]
    return examples
