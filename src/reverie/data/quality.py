"""Rule checks for text a model wrote for itself, before anything trains on it.

Each check returns a reason when the text fails it, None when it passes: too short or too long, repetitive
(a model stuck in a loop), not English (the checks and graders here assume English), or not valid JSON
where the task asks for JSON. Duplicates are caught by the dedup index (`reverie.data.dedup`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from reverie.data.text import normalize

# The most frequent English function words: a text of some length without them is not English prose.
ENGLISH_FUNCTION_WORDS = frozenset(
    "the of and to in is was for on that with as by it at from his her its are be this which or an were "
    "has have had not but they he she their also been who after first one two all more into than can "
    "there when what where them then these those some such only other over most very".split()
)


@dataclass(frozen=True)
class QualityRules:
    min_words: int = 3
    max_words: int = 200
    max_repeated_trigrams: float = 0.3  # share of word 3-grams that occur more than once
    min_function_words: float = 0.05  # share of words that are common English function words (texts of 8+ words)


def check_text(text: str, rules: QualityRules = QualityRules(), expects_json: bool = False) -> str | None:
    """The first rule `text` breaks, as a reason, or None."""
    words = text.lower().split()
    if len(words) < rules.min_words:
        return f"too short: {len(words)} words (at least {rules.min_words})"
    if len(words) > rules.max_words:
        return f"too long: {len(words)} words (at most {rules.max_words})"
    trigrams = list(zip(words, words[1:], words[2:]))
    if trigrams:
        counts = Counter(trigrams)
        repeated = sum(c for c in counts.values() if c > 1) / len(trigrams)
        if repeated > rules.max_repeated_trigrams:
            return f"repetitive: {repeated:.0%} of word 3-grams repeat (at most {rules.max_repeated_trigrams:.0%})"
    plain = normalize(text).split()
    if len(plain) >= 8:
        share = sum(w in ENGLISH_FUNCTION_WORDS for w in plain) / len(plain)
        if share < rules.min_function_words:
            return f"not English prose: {share:.0%} common English words (at least {rules.min_function_words:.0%})"
    if expects_json:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    return None
