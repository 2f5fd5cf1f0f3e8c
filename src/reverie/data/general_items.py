"""The built-in general check beyond its 60 hand-written items: two-way items in PIQA's format made from fact
tables shipped with reverie (demo/general_tables.json) and from arithmetic, so that the default forgetting check
has the paired items a 2-point drop needs (stats.paired_items_needed; README "The Gate").

Every item is fixed by the tables and this code alone (no randomness, no clock): the same package always builds
the same check. Families are interleaved in proportion, so the first N items of any general_limit are a mix."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

from reverie.data.files import read_builtin
from reverie.data.multiple_choice import ChoiceItem

TABLES = "demo/general_tables.json"
ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _digest(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12], 16)


def _number(key: str, index: int, low: int, high: int) -> int:
    """A number in [low, high] fixed by (key, index)."""
    return low + _digest(key, index) % (high - low + 1)


def _item(goal: str, right: str, wrong: str) -> ChoiceItem:
    """The right answer first or second by a hash of the goal, so that the labels are balanced and fixed."""
    label = _digest(goal) % 2
    return ChoiceItem(goal, (wrong, right) if label else (right, wrong), label)


def number_words(n: int) -> str:
    """0-999 in words, e.g. 347 -> 'three hundred and forty-seven'."""
    hundreds, rest = divmod(n, 100)
    if hundreds:
        return f"{ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")


def table_items(name: str, family: dict) -> list[ChoiceItem]:
    """One item per row and template; the wrong answer is the template's `wrong` on the same row, else the answer
    of another row with a different value (chosen by hash)."""
    rows = family["rows"]
    items = []
    for template in family["templates"]:
        for index, row in enumerate(rows):
            right = template["answer"].format(*row)
            if "wrong" in template:
                wrong = template["wrong"].format(*row)
            else:
                others = [template["answer"].format(*other) for other in rows]
                candidates = [answer for answer in others if answer != right]
                wrong = candidates[_digest(name, template["goal"], index) % len(candidates)]
            if wrong != right:
                items.append(_item(template["goal"].format(*row), right, wrong))
    return items


def _arithmetic(words: str, operation: Callable[[int, int], int], low: int, high: int,
                count: int) -> list[ChoiceItem]:
    items = []
    for index in range(count):
        a, b = _number(words, 2 * index, low, high), _number(words, 2 * index + 1, low, high)
        a, b = max(a, b), min(a, b)  # subtraction stays non-negative
        right = operation(a, b)
        offset = (1, 2, 10)[index % 3] * (1 if _digest(words, "sign", index) % 2 else -1)
        wrong = right + offset if right + offset >= 0 else right - offset
        items.append(_item(f"{a} {words} {b} equals", f"{right}.", f"{wrong}."))
    return items


def _comparisons(count: int) -> list[ChoiceItem]:
    items = []
    for index in range(count):
        a = _number("larger", 2 * index, 10, 999)
        b = _number("larger", 2 * index + 1, 10, 999)
        if a == b:
            continue
        items.append(_item(f"Of the numbers {a} and {b}, the larger one is", f"{max(a, b)}.", f"{min(a, b)}."))
    return items


def _spelled(count: int) -> list[ChoiceItem]:
    items = []
    for index in range(count):
        n = _number("spelled", index, 11, 999)
        near = n + 1 if n % 10 != 9 else n - 1
        items.append(_item(f"The number {number_words(n)} is written in digits as", f"{n}.", f"{near}."))
        items.append(_item(f"The number {n} is written in words as", f"{number_words(n)}.", f"{number_words(near)}."))
    return items


def _neighbours(count: int) -> list[ChoiceItem]:
    items = []
    for index in range(count):
        n = _number("neighbours", index, 2, 998)
        if index % 2:
            items.append(_item(f"Counting up, the number that comes after {n} is", f"{n + 1}.", f"{n - 1}."))
        else:
            items.append(_item(f"Counting up, the number that comes before {n} is", f"{n - 1}.", f"{n + 1}."))
    return items


def generated_families() -> dict[str, list[ChoiceItem]]:
    """Every family's items by name: the fact tables, then arithmetic and numbers."""
    tables = json.loads(read_builtin(TABLES))["families"]
    families = {name: table_items(name, family) for name, family in tables.items()}
    families |= {
        "addition": _arithmetic("plus", lambda a, b: a + b, 2, 60, 220),
        "subtraction": _arithmetic("minus", lambda a, b: a - b, 2, 99, 220),
        "multiplication": [_item(f"{a} times {b} equals", f"{a * b}.", f"{a * b + (a if (a + b) % 2 else -b)}.")
                           for a in range(2, 14) for b in range(2, 14)],
        "comparison": _comparisons(240),
        "spelled_numbers": _spelled(150),
        "counting": _neighbours(200),
    }
    return families


def interleaved(families: dict[str, list[ChoiceItem]]) -> Iterator[ChoiceItem]:
    """All items, each family spread evenly through the sequence (item k of a family of n sits at k/n)."""
    placed = [((index + 0.5) / len(items), name, index) for name, items in families.items()
              for index in range(len(items))]
    for _, name, index in sorted(placed):
        yield families[name][index]


def generated_items(exclude_goals: set[str]) -> list[ChoiceItem]:
    """The generated items in their fixed order, without goals already taken (the hand-written items')."""
    seen = set(exclude_goals)
    items = []
    for item in interleaved(generated_families()):
        if item.goal not in seen:
            seen.add(item.goal)
            items.append(item)
    return items
