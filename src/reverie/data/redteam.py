"""The red-team library: harmful requests and jailbreaks the model must refuse, and look-alike safe prompts it
must answer, each with a category; versioned, so that the weekly refresh adds to it without losing history.

Every import writes a new version (all items so far, deduplicated by normalised prompt) as a dataset of kind
"redteam", labelled `redteam/v<N>` for people; the newest registered is the library. Half of all prompts, chosen
by content hash, are held out for the Gate's safety suites and never become training pairs, whichever file they
arrive in; of the rest, items that must be refused become refusal training pairs, and safe look-alikes become
preference pairs for Dream's dpo (the model's helpful answer over a refusal), so that alignment does not buy
over-refusal.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel

from reverie.data.datasets import remove_orphans
from reverie.data.jsonl import read_jsonl, write_jsonl
from reverie.data.knowledge import Example
from reverie.data.records import content_id
from reverie.data.splits import safety_held_out, safety_train
from reverie.data.text import surrogate_problem
from reverie.errors import ReverieError
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

FORMATS = ("advbench", "xstest", "jsonl")

# AdvBench has no categories: a request is filed under the first category whose keywords it contains.
CATEGORY_KEYWORDS = {
    "weapons": ("bomb", "weapon", "explosive", "gun", "firearm", "poison"),
    "cybercrime": ("hack", "malware", "virus", "ransomware", "password", "exploit", "phishing", "database"),
    "fraud": ("fraud", "scam", "counterfeit", "steal", "theft", "launder", "identity", "insider trading"),
    "violence": ("kill", "murder", "attack", "assault", "harm", "violent", "terror"),
    "drugs": ("drug", "cocaine", "meth", "heroin", "narcotic"),
    "self-harm": ("suicide", "self-harm", "eating disorder", "anorexia", "cutting"),
    "hate": ("racist", "hate", "discriminate", "discrimination", "harass", "bully"),
    "misinformation": ("fake news", "misinformation", "propaganda", "conspiracy", "false information"),
    "privacy": ("track", "spy", "stalk", "personal information", "surveil"),
}
_ENDINGS = "(?:s|es|d|ed|ing|er|ers|ment|ion|ions)?"
REFUSAL = ("I can't help with that. It could cause real harm; if you have a safe goal behind it, I'm glad to help "
           "with that instead.")


class RedTeamItem(BaseModel):
    id: str
    prompt: str
    category: str
    must_refuse: bool
    source: str  # the file it was imported from
    added_at: float


def categorize(prompt: str) -> str:
    """The first category one of whose keywords is a word of the prompt, allowing common endings ('hack'
    matches 'hacking', 'meth' does not match 'method')."""
    text = prompt.lower()
    for category, words in CATEGORY_KEYWORDS.items():
        if any(re.search(rf"\b{re.escape(word)}{_ENDINGS}\b", text) for word in words):
            return category
    return "other"


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ReverieError(f"{where}: must_refuse must be true or false, got {value!r}")


def read_items(path: Path, kind: str) -> list[RedTeamItem]:
    """Items from an AdvBench CSV (goal, target), an XSTest CSV (prompt, type, label) or a JSONL of
    {prompt, category, must_refuse}; a malformed row is reported with its line."""
    if kind not in FORMATS:
        raise ReverieError(f"--format {kind!r}: choose from {', '.join(FORMATS)}")
    if not path.is_file():
        raise ReverieError(f"{path} does not exist")
    now = time.time()
    try:
        return [RedTeamItem(id=content_id(prompt), prompt=prompt.strip(), category=category, must_refuse=refuse,
                            source=path.name, added_at=now) for prompt, category, refuse in _rows(path, kind)]
    except UnicodeDecodeError:
        raise ReverieError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ReverieError(f"{path}: not a readable CSV file ({exc})") from None


def _rows(path: Path, kind: str) -> Iterator[tuple[str, str, bool]]:
    """(prompt, category, must_refuse) for each row of a library file."""
    with path.open(newline="", encoding="utf-8") as handle:
        if kind == "jsonl":
            for number, line in enumerate(handle, start=1):
                try:
                    row = json.loads(line)
                    prompt, flag = str(row["prompt"]), _flag(row["must_refuse"], f"{path}:{number}")
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    expected = "{prompt, must_refuse, category?}"
                    raise ReverieError(f"{path}:{number}: expected {expected} ({exc})") from None
                if (problem := surrogate_problem(prompt)) is not None:
                    raise ReverieError(f"{path}:{number}: prompt: {problem}")
                yield prompt, row.get("category") or categorize(prompt), flag
            return
        reader = csv.DictReader(handle)
        needed = {"advbench": {"goal"}, "xstest": {"prompt", "type", "label"}}[kind]
        if missing := needed - set(reader.fieldnames or []):
            raise ReverieError(f"{path}: not an {kind} file: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            if kind == "advbench":
                yield row["goal"], categorize(row["goal"]), True
            elif row["label"] not in ("safe", "unsafe"):
                raise ReverieError(f"{path}:{reader.line_num}: label must be 'safe' or 'unsafe', got {row['label']!r}")
            else:
                yield row["prompt"], row["type"], row["label"] == "unsafe"


def library_versions(ws: Workspace) -> list[DatasetRecord]:
    """Every version of the library, oldest first."""
    return ws.registry.list_datasets(kind="redteam")


def load_library(ws: Workspace) -> list[RedTeamItem]:
    """The items of the newest version."""
    versions = library_versions(ws)
    return load_version_items(ws, versions[-1].hash if versions else None)


def load_version_items(ws: Workspace, version: str | None) -> list[RedTeamItem]:
    """The items of one library version (a cycle's frozen one); none when there was no library."""
    if version is None:
        return []
    return read_jsonl(ws.artifacts.path(version) / "items.jsonl", RedTeamItem.model_validate)


def import_items(ws: Workspace, items: list[RedTeamItem]) -> tuple[DatasetRecord | None, int]:
    """A new library version with `items` added, and how many were new; no version when none was."""
    library = {item.id: item for item in load_library(ws)}
    before = len(library)
    for item in items:
        library.setdefault(item.id, item)
    if len(library) == before:
        return None, 0
    sources = ", ".join(sorted({i.source for i in items}))
    with ws.cycle_lock():  # a cycle's garbage collection must not see the artifact before it is registered
        remove_orphans(ws)
        with ws.artifacts.stage() as staged:
            write_jsonl(staged.path / "items.jsonl", library.values())
        dataset = DatasetRecord(staged.hash, f"redteam/v{len(library_versions(ws)) + 1}", len(library),
                                f"red-team import of {sources}", time.time(), kind="redteam", cycle_id=None)
        ws.registry.add_dataset(dataset)
    return dataset, len(library) - before


def coverage(items: list[RedTeamItem]) -> dict[str, tuple[int, int]]:
    """Per category: (items that must be refused, safe look-alikes that must be answered)."""
    refuse = Counter(i.category for i in items if i.must_refuse)
    answer = Counter(i.category for i in items if not i.must_refuse)
    return {c: (refuse[c], answer[c]) for c in sorted(refuse.keys() | answer.keys())}


def refusal_pairs(items: list[RedTeamItem]) -> list[Example]:
    """Training pairs that teach refusal, one per item that must be refused and is not held out."""
    return [Example(prompt=i.prompt, completion=REFUSAL) for i in safety_train(items) if i.must_refuse]


def infer_format(path: Path) -> str:
    """jsonl by suffix; for a CSV, advbench when it has a goal column, else xstest."""
    if path.suffix == ".jsonl":
        return "jsonl"
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise ReverieError(f"{path}: cannot be read ({exc})") from None
    return "advbench" if "goal" in header else "xstest"


def load_safety_items(spec: str, base_dir: Path, key: str) -> list[RedTeamItem]:
    """The held-out items of a safety suite's file: 'builtin' (a small set shipped with reverie) or a path."""
    if spec == "builtin":
        with resources.as_file(resources.files("reverie.data") / "demo" / f"{key.rsplit('.', 1)[-1]}.jsonl") as path:
            items = read_items(path, "jsonl")
    else:
        path = base_dir / Path(spec).expanduser()
        if not path.is_file():
            raise ReverieError(f"{key}: {path} does not exist (use 'builtin', an AdvBench or XSTest CSV, or a JSONL "
                               "of {prompt, must_refuse, category})")
        items = read_items(path, infer_format(path))
    kept = safety_held_out(items, key)
    if not kept:
        raise ReverieError(f"{key}: none of the {len(items)} items of {spec} falls in the held-out half")
    return kept
