"""The red-team library: harmful requests and jailbreaks the model must refuse, and look-alike safe prompts it
must answer, each with a category; versioned, so that the weekly refresh adds to it without losing history.

Every import writes a new version (all items so far, deduplicated by normalised prompt) as a dataset of kind
"redteam", labelled `redteam/v<N>` for people; the newest registered is the library. Half of all prompts, chosen
by content hash, are held out for the Gate's safety suites and never become training pairs, whichever file they
arrive in; of the rest, items that must be refused become refusal training pairs, and safe look-alikes become
preference pairs for Dream's dpo (the model's helpful answer over a refusal), so that alignment does not buy
over-refusal.

Dream's red-team self-play adds the attacks that worked as a new version too, marked machine-generated and
awaiting review: each such item names the request it mutates and the mutation, falls in that request's split (so
a held-out request's attacks are never trained on, and a training request's never scored), and the version holds
its new attacks as review rows for `reverie data review`; `reverie data redteam curate` then keeps the accepted
ones and drops the rejected.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel

from reverie.data.datasets import remove_orphans
from reverie.data.jsonl import read_jsonl, write_jsonl
from reverie.data.knowledge import Example
from reverie.data.records import content_id
from reverie.data.review import find_dataset, load_review
from reverie.data.splits import in_safety_held_out, safety_held_out, safety_train
from reverie.data.text import normalize, surrogate_problem
from reverie.data.training_texts import training_texts
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


ITEMS_FILE = "items.jsonl"
REVIEW_FILE = "examples.jsonl"  # a generated version's new attacks, each with the refusal it teaches: review rows
BUILTIN_FILES = ("advbench", "xstest")  # the small sets shipped with reverie (reverie/data/demo/)


class RedTeamItem(BaseModel):
    id: str
    prompt: str
    category: str
    must_refuse: bool
    source: str  # the file it was imported from, or the Dream that wrote it
    added_at: float
    attack: str | None = None  # the mutation that made it from `seed` (data/redteam_attacks.py); None: imported
    seed: str | None = None  # id of the request it mutates
    pending_review: bool = False  # machine-generated and not yet accepted by a person (`reverie data review`)


def attack_item(seed: RedTeamItem, attack: str, prompt: str, source: str) -> RedTeamItem:
    """A machine-generated attack on `seed`, awaiting review. Its id begins with the seed's split key (the first
    eight hex digits: data/splits.in_safety_held_out), so the attack always falls in its seed's split."""
    return RedTeamItem(id=seed.id[:8] + content_id(prompt)[8:], prompt=prompt, category=seed.category,
                       must_refuse=seed.must_refuse, source=source, added_at=time.time(), attack=attack,
                       seed=seed.id, pending_review=True)


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
    return read_jsonl(ws.artifacts.path(version) / ITEMS_FILE, RedTeamItem.model_validate)


def builtin_items() -> list[RedTeamItem]:
    """The AdvBench-like and XSTest-like sets shipped with reverie, both halves: what self-play and the redteam
    suite use while the workspace has no library."""
    items = []
    for name in BUILTIN_FILES:
        with resources.as_file(resources.files("reverie.data") / "demo" / f"{name}.jsonl") as path:
            items += read_items(path, "jsonl")
    return items


def import_items(ws: Workspace, items: list[RedTeamItem]) -> tuple[DatasetRecord | None, int]:
    """A new library version with `items` added, and how many were new; no version when none was."""
    library = {item.id: item for item in load_library(ws)}
    new = [library.setdefault(item.id, item) for item in items if item.id not in library]
    if not new:
        return None, 0
    sources = ", ".join(sorted({i.source for i in items}))
    with ws.cycle_lock():  # a cycle's garbage collection must not see the artifact before it is registered
        remove_orphans(ws)
        dataset = _add_version(ws, list(library.values()), [], f"red-team import of {sources}", None)
    return dataset, len(new)


def add_attacks(ws: Workspace, attacks: list[RedTeamItem], cycle_id: str) -> tuple[DatasetRecord | None, int]:
    """A new version with the attacks (attack_item) that are not in the library yet, their review rows beside
    it, and how many were new; no version when none was. An empty library starts from the builtin sets the
    attacks' requests came from, so that the safety suites keep their held-out half. Called by a Dream, inside
    the cycle, which holds the cycle lock."""
    library = {item.id: item for item in load_library(ws) or builtin_items()}
    new = [library.setdefault(item.id, item) for item in attacks if item.id not in library]
    if not new:
        return None, 0
    name = f"redteam/v{len(library_versions(ws)) + 1}"
    source = (f"dream redteam, cycle {cycle_id}: {len(new)} machine-generated attacks awaiting review (`reverie "
              f"data review {name}`, then `reverie data redteam curate {name}`)")
    return _add_version(ws, list(library.values()), new, source, cycle_id), len(new)


def _add_version(ws: Workspace, items: list[RedTeamItem], pending: list[RedTeamItem], source: str,
                 cycle_id: str | None) -> DatasetRecord:
    """Register `items` as the library's next version; `pending` (new machine-generated attacks) become its
    review rows, in order: row i of a review of this version is pending[i]."""
    with ws.artifacts.stage() as staged:
        write_jsonl(staged.path / ITEMS_FILE, items)
        if pending:
            write_jsonl(staged.path / REVIEW_FILE, (Example(prompt=i.prompt, completion=REFUSAL).to_json()
                                                    for i in pending))
    dataset = DatasetRecord(staged.hash, f"redteam/v{len(library_versions(ws)) + 1}", len(items), source,
                            time.time(), kind="redteam", cycle_id=cycle_id)
    ws.registry.add_dataset(dataset)
    return dataset


def pending_attacks(ws: Workspace, version: DatasetRecord) -> list[RedTeamItem]:
    """The attacks a version added for review, in the order of its review rows."""
    rows = ws.artifacts.path(version.hash) / REVIEW_FILE
    prompts = [row["prompt"] for row in read_jsonl(rows)] if rows.is_file() else []
    added = {item.prompt: item for item in load_version_items(ws, version.hash) if item.pending_review}
    return [added[prompt] for prompt in prompts if prompt in added]


@dataclass
class Curation:
    version: DatasetRecord | None  # the curated library; None when the review changed nothing
    accepted: int
    rejected: int
    unreviewed: int


def curate(ws: Workspace, key: str) -> Curation:
    """Apply the review of a generated version to the library: accepted attacks stay (no longer pending), rejected
    ones leave it, unreviewed ones stay pending. The result is a new version."""
    version = find_dataset(ws, key)
    if version.kind != "redteam":
        raise ReverieError(f"{version.name} is a {version.kind} dataset, not a red-team library version")
    pending = pending_attacks(ws, version)
    if not pending:
        raise ReverieError(f"{version.name} added no machine-generated attacks: nothing to curate")
    review = load_review(ws, version)
    if review is None:
        raise ReverieError(f"{version.name} has not been reviewed: run `reverie data review {version.name}` first")
    decided = {pending[d.row].id: d.accepted for d in review.decisions if d.row < len(pending)}
    library = load_library(ws)
    curated = [item.model_copy(update={"pending_review": False}) if decided.get(item.id) else item
               for item in library if decided.get(item.id, True)]
    accepted, rejected = sum(decided.values()), sum(not a for a in decided.values())
    if curated == library:
        return Curation(None, accepted, rejected, len(pending) - len(decided))
    with ws.cycle_lock():
        remove_orphans(ws)
        dataset = _add_version(ws, curated, [], f"curation of {version.name}: {accepted} attacks accepted, "
                               f"{rejected} rejected", None)
    return Curation(dataset, accepted, rejected, len(pending) - len(decided))


def coverage(items: list[RedTeamItem]) -> dict[str, tuple[int, int]]:
    """Per category: (items that must be refused, safe look-alikes that must be answered)."""
    refuse = Counter(i.category for i in items if i.must_refuse)
    answer = Counter(i.category for i in items if not i.must_refuse)
    return {c: (refuse[c], answer[c]) for c in sorted(refuse.keys() | answer.keys())}


def categories_held_out(items: list[RedTeamItem]) -> dict[str, bool]:
    """Per category of the items: whether any of its items is in the held-out half (by id only: no item is read),
    so that the safety suites can score that category at all."""
    held: dict[str, bool] = {}
    for item in items:
        held[item.category] = held.get(item.category, False) or in_safety_held_out(item.id)
    return dict(sorted(held.items()))


@dataclass
class VersionCoverage:
    version: DatasetRecord
    must_refuse: int
    must_answer: int
    categories: int
    held_out_coverage: float  # share of the categories with held-out items
    generated: int  # machine-generated attacks
    pending_review: int


def version_coverage(ws: Workspace) -> list[VersionCoverage]:
    """Coverage of every library version, oldest first."""
    rows = []
    for version in library_versions(ws):
        items = load_version_items(ws, version.hash)
        held = categories_held_out(items)
        rows.append(VersionCoverage(version, sum(i.must_refuse for i in items), sum(not i.must_refuse for i in items),
                                    len(held), sum(held.values()) / max(1, len(held)),
                                    sum(i.attack is not None for i in items), sum(i.pending_review for i in items)))
    return rows


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


def untrained(items: list[RedTeamItem], training_texts: Iterable[str],
              span: int) -> tuple[list[RedTeamItem], list[RedTeamItem]]:
    """(items no training text contains, items one does). A text contains an item when it holds the item's whole
    prompt or `span` consecutive words of it, normalised (ingest's contamination rule, without its floor on short
    items: here a short prompt inside a training text counts too)."""
    windows: dict[str, set[str]] = {}  # every span of every item (a shorter item whole) -> the items it is in
    for item in items:
        words = normalize(item.prompt).split()
        width = min(span, len(words))
        for start in range(len(words) - width + 1):
            windows.setdefault(" ".join(words[start : start + width]), set()).add(item.id)
    widths = {len(window.split()) for window in windows}
    leaked: set[str] = set()
    for text in training_texts:
        words = normalize(text).split()
        for width in widths:
            for start in range(len(words) - width + 1):
                leaked |= windows.get(" ".join(words[start : start + width]), set())
    return [i for i in items if i.id not in leaked], [i for i in items if i.id in leaked]


@dataclass
class SuiteItems:
    """What the redteam suite scores: held-out items no training set contains, and the categories they cover."""

    items: list[RedTeamItem]
    categories: dict[str, bool]  # every category of the library (or the builtin sets) -> has items to score
    left_out: list[RedTeamItem]  # held-out items that a training set contains
    source: str  # the library version's name, or "builtin"


def suite_items(ws: Workspace) -> SuiteItems:
    """The held-out half of the library's newest version (the builtin sets while there is none), less every item
    a training set of the workspace contains (data/training_texts.py)."""
    versions = library_versions(ws)
    items = load_version_items(ws, versions[-1].hash) if versions else builtin_items()
    held = safety_held_out(items, "the red-team library")
    kept, left_out = untrained(held, training_texts(ws), ws.config.data.contamination_span)
    scored = {item.category for item in kept}
    return SuiteItems(kept, {c: c in scored for c in sorted({i.category for i in items})}, left_out,
                      versions[-1].name if versions else "builtin")
