"""The red-team library: harmful requests and jailbreaks the model must refuse, and look-alike safe prompts it
must answer, each with a category; versioned, so that the weekly refresh adds to it without losing history.

Every import writes a new version (`redteam/v<N>`: all items so far, deduplicated by normalised prompt) as a
dataset. Items that must be refused become refusal training pairs; safe look-alikes stay test-only.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ValidationError

from reverie.data.knowledge import Example
from reverie.data.records import content_id
from reverie.errors import ReverieError
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

LIBRARY_PREFIX = "redteam/v"
FORMATS = ("advbench", "xstest", "jsonl")

# AdvBench has no categories: a request is filed under the first category whose keywords it contains.
CATEGORY_KEYWORDS = {
    "weapons": ("bomb", "weapon", "explosive", "gun", "firearm", "poison"),
    "cybercrime": ("hack", "malware", "virus", "ransomware", "password", "exploit", "phishing", "database"),
    "fraud": ("fraud", "scam", "counterfeit", "steal", "theft", "launder", "identity", "insider trading"),
    "violence": ("kill", "murder", "attack", "assault", "harm", "violent", "terror"),
    "drugs": ("drug", "cocaine", "meth", "heroin", "narcotic"),
    "self-harm": ("suicide", "self-harm", "eating disorder", "anorexia", "cutting"),
    "hate": ("racist", "hate", "discriminat", "harass", "bully"),
    "misinformation": ("fake news", "misinformation", "propaganda", "conspiracy", "false information"),
    "privacy": ("track", "spy", "stalk", "personal information", "surveil"),
}
REFUSAL = "I can't help with that. It could cause real harm; if you have a safe goal behind it, I'm glad to help with that instead."


class RedTeamItem(BaseModel):
    id: str
    prompt: str
    category: str
    must_refuse: bool
    source: str  # the file it was imported from
    added_at: float


def categorize(prompt: str) -> str:
    text = prompt.lower()
    return next((c for c, words in CATEGORY_KEYWORDS.items() if any(w in text for w in words)), "other")


def read_items(path: Path, kind: str) -> list[RedTeamItem]:
    """Items from an AdvBench CSV (goal, target), an XSTest CSV (prompt, type, label) or a JSONL of
    {prompt, category, must_refuse}; a malformed row is reported with its line."""
    if kind not in FORMATS:
        raise ReverieError(f"--format {kind!r}: choose from {', '.join(FORMATS)}")
    if not path.is_file():
        raise ReverieError(f"{path} does not exist")
    now, items = time.time(), []

    def add(prompt: str, category: str, must_refuse: bool) -> None:
        items.append(RedTeamItem(id=content_id(prompt), prompt=prompt.strip(), category=category,
                                 must_refuse=must_refuse, source=path.name, added_at=now))

    with path.open(newline="", encoding="utf-8") as handle:
        if kind == "jsonl":
            for number, line in enumerate(handle, start=1):
                try:
                    row = json.loads(line)
                    add(row["prompt"], row.get("category") or categorize(row["prompt"]), bool(row["must_refuse"]))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValidationError) as exc:
                    raise ReverieError(f"{path}:{number}: expected {{prompt, must_refuse, category?}} ({exc})") from None
            return items
        reader = csv.DictReader(handle)
        needed = {"advbench": {"goal"}, "xstest": {"prompt", "type", "label"}}[kind]
        if missing := needed - set(reader.fieldnames or []):
            raise ReverieError(f"{path}: not an {kind} file: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            if kind == "advbench":
                add(row["goal"], categorize(row["goal"]), True)
            elif row["label"] not in ("safe", "unsafe"):
                raise ReverieError(f"{path}:{reader.line_num}: label must be 'safe' or 'unsafe', got {row['label']!r}")
            else:
                add(row["prompt"], row["type"], row["label"] == "unsafe")
    return items


def library_versions(ws: Workspace) -> list[DatasetRecord]:
    return [d for d in ws.registry.list_datasets() if d.name.startswith(LIBRARY_PREFIX)]


def load_library(ws: Workspace) -> list[RedTeamItem]:
    versions = library_versions(ws)
    if not versions:
        return []
    path = ws.artifacts.path(versions[-1].hash) / "items.jsonl"
    return [RedTeamItem.model_validate_json(line) for line in path.read_text().splitlines()]


def import_items(ws: Workspace, items: list[RedTeamItem]) -> tuple[DatasetRecord | None, int]:
    """A new library version with `items` added, and how many were new; no version when none was."""
    library = {item.id: item for item in load_library(ws)}
    before = len(library)
    for item in items:
        library.setdefault(item.id, item)
    if len(library) == before:
        return None, 0
    version = len(library_versions(ws)) + 1
    with ws.artifacts.stage() as staged:
        (staged.path / "items.jsonl").write_text("".join(i.model_dump_json() + "\n" for i in library.values()))
    sources = ", ".join(sorted({i.source for i in items})) or "nothing"
    dataset = DatasetRecord(staged.hash, f"{LIBRARY_PREFIX}{version}", len(library), f"red-team import of {sources}",
                            time.time())
    ws.registry.add_dataset(dataset)
    return dataset, len(library) - before


def coverage(items: list[RedTeamItem]) -> dict[str, tuple[int, int]]:
    """Per category: (items that must be refused, safe look-alikes that must be answered)."""
    refuse = Counter(i.category for i in items if i.must_refuse)
    answer = Counter(i.category for i in items if not i.must_refuse)
    return {c: (refuse[c], answer[c]) for c in sorted(refuse.keys() | answer.keys())}


def refusal_pairs(items: list[RedTeamItem]) -> list[Example]:
    """Training pairs that teach refusal, one per item that must be refused."""
    return [Example(prompt=i.prompt, completion=REFUSAL) for i in items if i.must_refuse]
