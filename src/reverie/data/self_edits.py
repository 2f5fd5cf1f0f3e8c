"""SEAL self-edits as text: the prompts that ask a model to write its own training data, and the parser
that turns what it wrote into training sequences (one per line or item, prefixed with the passage title)."""

from __future__ import annotations

import re

from reverie.data.knowledge import Example
from reverie.data.quality import ENGLISH_FUNCTION_WORDS, QualityRules, check_text
from reverie.data.text import normalize

PROMPT_STYLES: dict[str, str] = {
    "implications": (
        "Read the passage and list the implications that follow from it, one per line.\n\n"
        "Title: {title}\nPassage: {passage}"
    ),
    "implications-long": (
        "Read the passage and write a long list of implications that follow from it, directly or indirectly, "
        "one per line, each a complete sentence that names what it is about.\n\nTitle: {title}\nPassage: {passage}"
    ),
    "rewrite": (
        "Rewrite the passage in several different ways, each a short paragraph that keeps every fact.\n\n"
        "Title: {title}\nPassage: {passage}"
    ),
    "self-qa": (
        "Write questions about the passage, each followed by its answer, one question-answer pair per line.\n\n"
        "Title: {title}\nPassage: {passage}"
    ),
}

_ITEM_PREFIX = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\))(?=\s)\s*")  # a marker, then whitespace
_MIN_WORDS = 3


def self_edit_prompt(style: str, title: str, passage: str) -> str:
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown self-edit style {style!r}; choose from {', '.join(PROMPT_STYLES)}")
    return PROMPT_STYLES[style].format(title=title, passage=passage)


def parse_self_edit(text: str) -> list[str]:
    """Split a self-edit into items: one per non-empty line, list markers and markdown emphasis stripped,
    headings and fragments shorter than three words dropped, duplicates removed (order kept)."""
    items: list[str] = []
    for line in text.splitlines():
        item = _ITEM_PREFIX.sub("", line).replace("**", "").strip()
        if len(item.split()) < _MIN_WORDS or item.endswith(":"):
            continue
        if item not in items:
            items.append(item)
    return items


def _content_words(text: str) -> set[str]:
    return {w for w in normalize(text).split() if len(w) >= 4 and w not in ENGLISH_FUNCTION_WORDS}


def gate_items(items: list[str], title: str, passage: str,
               rules: QualityRules = QualityRules()) -> tuple[list[str], list[tuple[str, str]]]:
    """Split self-edit items into (kept, [(dropped item, reason)]): an item must pass the quality rules and
    name something the passage does (share a content word, four or more letters and not a common function
    word like 'that' or 'which', with its title or text)."""
    source = _content_words(f"{title} {passage}")
    kept, dropped = [], []
    for item in items:
        reason = check_text(item, rules)
        if reason is None and not _content_words(item) & source:
            reason = "off topic: shares no content word with its document"
        if reason is None:
            kept.append(item)
        else:
            dropped.append((item, reason))
    return kept, dropped


def teacher_self_edits(passages: list[tuple[str, str, str]], style: str = "implications") -> list[Example]:
    """Generator training pairs from teacher-written self-edits of (title, passage, self-edit text): the prompt the
    generator is asked, and the teacher's items as the answer (SEAL's generator warm-started by distillation)."""
    examples = []
    for title, passage, text in passages:
        if items := parse_self_edit(text):
            examples.append(Example(prompt=self_edit_prompt(style, title, passage), completion="\n".join(items)))
    return examples


def self_edit_examples(title: str, passage: str, items: list[str]) -> list[Example]:
    """Training sequences for one passage: the passage itself, then each item prefixed with the title."""
    return [Example(completion=f"{title}\n{passage}")] + [Example(completion=f"{title}\n{item}") for item in items]
