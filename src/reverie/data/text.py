"""Text normalisation shared by graders and data checks."""

from __future__ import annotations

import re
import string
from typing import Annotated

from pydantic import BeforeValidator

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether the normalised phrase occurs as whole words in the normalised text."""
    phrase_norm = normalize(phrase)
    return bool(phrase_norm) and f" {phrase_norm} " in f" {normalize(text)} "


def surrogate_problem(text: str) -> str | None:
    """Why `text` is not Unicode text a tokenizer can read (a lone surrogate, which JSON's \\uD800 escapes can
    carry but UTF-8 cannot), or None."""
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return f"lone surrogate U+{ord(match.group()):04X} at character {match.start()}: not valid Unicode text"


def _valid_unicode(value: object) -> object:
    """Before any other check of the field, so that a length limit does not word the problem less clearly."""
    if isinstance(value, str) and (problem := surrogate_problem(value)) is not None:
        raise ValueError(problem)
    return value


UnicodeText = Annotated[str, BeforeValidator(_valid_unicode)]
"""A str field that refuses lone surrogates, for text that arrives from outside (JSON bodies, ingested rows)."""
