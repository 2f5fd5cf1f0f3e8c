"""Two-way multiple-choice items in PIQA's format ({goal, sol1, sol2, label}), for the forgetting check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reverie.data.files import read_data_text
from reverie.errors import ReverieError

BUILTIN = "builtin"


@dataclass(frozen=True)
class ChoiceItem:
    goal: str
    choices: tuple[str, str]
    label: int


def load_choice_items(spec: str, base_dir: Path, limit: int) -> list[ChoiceItem]:
    """Load 'builtin' or a PIQA-format JSONL file; a malformed line is reported with its number. 'builtin' is the
    60 hand-written items of demo/general_mc.jsonl, then items generated from reverie's fact tables (about 2,600
    in all: data/general_items.py)."""
    items = _read_choice_items(spec, base_dir, limit)
    if spec == BUILTIN and len(items) < limit:
        from reverie.data.general_items import generated_items  # it builds ChoiceItems: imported here, not above

        items += generated_items({item.goal for item in items})[: limit - len(items)]
    return items


def _read_choice_items(spec: str, base_dir: Path, limit: int) -> list[ChoiceItem]:
    text, origin = read_data_text(
        spec, base_dir, "eval.general_suite", (BUILTIN, "demo/general_mc.jsonl"), "a PIQA-format JSONL file"
    )
    lines = text.split("\n")  # JSON Lines end at \n only (see data/jsonl.py)
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = ChoiceItem(str(row["goal"]), (str(row["sol1"]), str(row["sol2"])), int(row["label"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ReverieError(
                f"{origin}, line {number}: expected {{goal, sol1, sol2, label}} with label 0 or 1 ({exc})"
            ) from None
        if item.label not in (0, 1):
            raise ReverieError(f"{origin}, line {number}: label must be 0 or 1, got {item.label}")
        items.append(item)
        if len(items) >= limit:
            break
    if not items:
        raise ReverieError(f"{origin}: no items")
    return items
