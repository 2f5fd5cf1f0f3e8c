"""Training records with provenance, and the rows that were not kept, each with its reason.

A record is either plain text (continued pretraining) or a prompt with its completion (SFT). Its id is the
hash of its normalised content, so the same text from two files is the same record.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reverie.data.knowledge import Example
from reverie.data.text import UnicodeText, normalize


MAX_FIELD_CHARS = 1_000_000  # a text, prompt or completion longer than this is quarantined at ingest


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str  # a name from data.sources
    tier: int  # the source's trust tier (higher is more trusted)
    licence: str
    origin: str  # file and line (or row, or file name) the record came from
    ingested_at: float


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    text: UnicodeText | None = Field(None, max_length=MAX_FIELD_CHARS)
    prompt: UnicodeText | None = Field(None, max_length=MAX_FIELD_CHARS)
    completion: UnicodeText | None = Field(None, max_length=MAX_FIELD_CHARS)
    bucket: str = "general"
    provenance: Provenance
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _content(self) -> Record:
        has_text = bool(self.text and self.text.strip())
        has_pair = bool(self.prompt and self.prompt.strip() and self.completion and self.completion.strip())
        if has_text == has_pair:
            raise ValueError("a record needs either a non-empty 'text' or a non-empty 'prompt' and 'completion'")
        if has_text:  # blank fields of the other kind are absent, not empty content
            self.prompt = self.completion = None
        else:
            self.text = None
        if not self.id:
            self.id = content_id(self.content())
        return self

    @property
    def tier(self) -> int:
        """The source's trust tier, which weights how often the data mix draws the record."""
        return self.provenance.tier

    def example(self) -> Example:
        """The training example: plain text, or a chat prompt with its completion."""
        return Example(completion=self.text) if self.text is not None else Example(self.completion, self.prompt)

    def content(self) -> str:
        """The text exact dedup and contamination checks compare."""
        return self.text if self.text is not None else f"{self.prompt}\n{self.completion}"

    def near_dedup_text(self) -> str:
        """The text near-duplicate checks compare: for a pair, its prompt, since many pairs share one templated
        completion (a refusal, say) that would make different requests look alike."""
        return self.text if self.text is not None else str(self.prompt)


def content_id(text: str) -> str:
    """Short hash of the normalised text: the same text from two files is the same record."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()[:16]


class Rejected(BaseModel):
    """A row that was not kept: quarantined (it is bad) or removed (it duplicates or leaks something)."""

    model_config = ConfigDict(extra="forbid")
    origin: str
    step: str  # the ingest step that rejected it
    reason: str
    row: Any = None  # the raw row, as read
