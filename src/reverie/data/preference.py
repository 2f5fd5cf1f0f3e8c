"""Preference pairs: a prompt (text or chat messages), the answer people or a judge preferred, and the one they
did not. They are stored as datasets of kind "preference" (`pairs.jsonl`), which the reward model, DPO and the
preference suite's judge read; data/splits.py says which pairs each of them may read.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reverie.data.files import read_data_text
from reverie.data.jsonl import read_jsonl
from reverie.data.records import content_id
from reverie.data.splits import PREFERENCE_SHARES, preference_split
from reverie.data.text import UnicodeText
from reverie.errors import ReverieError
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

PAIRS_FILE = "pairs.jsonl"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: UnicodeText


class PreferencePair(BaseModel):
    """One comparison. `prompt` is a string (TRL's standard format) or the conversation before the answer
    (TRL's conversational format, ending with a user turn)."""

    model_config = ConfigDict(extra="forbid")
    id: str = ""  # content hash of prompt, chosen and rejected
    prompt: UnicodeText | list[Message]
    chosen: UnicodeText
    rejected: UnicodeText
    source: str  # where the pair came from: a data.sources name, "feedback", "redteam", "dream-vote"
    margin: float | None = None  # how strongly chosen is preferred, when the source says
    bucket: str = "general"
    tier: int = 0  # the source's trust tier
    origin: str = ""  # file and line, feedback id or red-team item id
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _identified(self) -> PreferencePair:
        if not self.id:
            self.id = content_id(f"{self.prompt_text()}\n{self.chosen}\n{self.rejected}")
        return self

    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [m.model_dump() for m in self.prompt]

    def prompt_id(self) -> str:
        """Content hash of the prompt: the key of the pair's split (data/splits.py)."""
        return content_id(self.prompt_text())

    def prompt_text(self) -> str:
        """The prompt as one text: what dedup and the contamination check compare."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(m.content for m in self.prompt)

    def trl_row(self) -> dict[str, Any]:
        """TRL's conversational preference format: {prompt: messages, chosen: [assistant], rejected: [assistant]}."""
        return {"prompt": self.messages(), "chosen": [{"role": "assistant", "content": self.chosen}],
                "rejected": [{"role": "assistant", "content": self.rejected}]}


def preference_datasets(ws: Workspace) -> list[DatasetRecord]:
    """The registered preference datasets, oldest first."""
    return ws.registry.list_datasets(kind="preference")


def load_pairs(ws: Workspace, dataset: DatasetRecord) -> list[PreferencePair]:
    """The kept pairs of a preference dataset."""
    return read_jsonl(ws.artifacts.path(dataset.hash) / PAIRS_FILE, PreferencePair.model_validate)


def preference_stats(ws: Workspace) -> dict[str, Counter]:
    """Kept pairs per bucket, source and split (data/splits.py: which trainer may read them), over every
    preference dataset."""
    stats = {"bucket": Counter(), "source": Counter(), "split": Counter(dict.fromkeys(PREFERENCE_SHARES, 0))}
    for dataset in preference_datasets(ws):
        for pair in load_pairs(ws, dataset):
            stats["bucket"][pair.bucket] += 1
            stats["source"][pair.source] += 1
            stats["split"][preference_split(pair.prompt_id())] += 1
    return stats


def load_preference_prompts(spec: str, base_dir: Path, limit: int) -> list[str]:
    """'builtin' or a JSONL file of {instruction} or {prompt} (text); a malformed line is named with its number."""
    text, origin = read_data_text(spec, base_dir, "eval.preference_prompts",
                                  ("builtin", "demo/preference_prompts.jsonl"), "a JSONL file of {instruction} or {prompt}")
    prompts = []
    for number, line in enumerate(text.split("\n"), start=1):  # JSON Lines end at \n only (see data/jsonl.py)
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReverieError(f"{origin}, line {number}: not JSON ({exc})") from None
        value = row.get("instruction", row.get("prompt")) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise ReverieError(f"{origin}, line {number}: expected an object with a non-empty text 'instruction' or "
                               "'prompt'")
        prompts.append(value.strip())
        if len(prompts) >= limit:
            break
    if not prompts:
        raise ReverieError(f"{origin}: no prompts")
    return prompts
