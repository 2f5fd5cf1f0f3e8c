"""Text normalisation shared by graders and data checks."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether the normalised phrase occurs as whole words in the normalised text."""
    phrase_norm = normalize(phrase)
    return bool(phrase_norm) and f" {phrase_norm} " in f" {normalize(text)} "
