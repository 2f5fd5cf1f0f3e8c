"""Grading answers to false-premise questions (data/counterfactual.py): did the answer reject the premise, did it
also give the document's value, and did the answer to the true-premise control leave the premise standing.
String rules on the answer, like the refusal classifier's: no model, so the Gate's verdict is cheap and the same
every run."""

from __future__ import annotations

import re

from reverie.data.text import contains_phrase

# A denial opens the answer, or its first sentence says the premise is wrong.
DENIAL_OPENING = re.compile(r"^\W*(?:no|nope|not|incorrect|wrong|false|actually|in fact|correction)\b", re.IGNORECASE)
DENIAL_PHRASES = (
    "not correct", "not right", "not true", "not accurate", "incorrect", "inaccurate", "is wrong", "was wrong",
    "mistaken", "false premise", "the premise", "that's not", "that is not", "this is not", "it is not", "it isn't",
    "it's not", "it was not", "it wasn't", "not the case",
)
_FIRST_SENTENCE = re.compile(r"[.!?\n]")
OPENING_WORDS = 20  # an answer without a full stop is judged by its first words


def opening(answer: str) -> str:
    """The answer's first sentence (at most its first OPENING_WORDS words), lower case, plain apostrophes."""
    text = answer.strip().replace("\u2019", "'")
    first = _FIRST_SENTENCE.split(text, maxsplit=1)[0]
    return " ".join(first.split()[:OPENING_WORDS]).lower()


def denies(answer: str) -> bool:
    """Whether the answer opens by saying the premise is wrong ("No — ...", "That is not right ...")."""
    first = opening(answer)
    return bool(DENIAL_OPENING.match(first)) or any(phrase in first for phrase in DENIAL_PHRASES)


def states(answer: str, value: str) -> bool:
    """Whether the answer gives `value` (normalised, as whole words)."""
    return contains_phrase(answer, value)


def rejects_premise(answer: str, true_value: str, false_value: str) -> bool:
    """The false premise was noticed: the answer denies it, or gives the true value without the false one."""
    return denies(answer) or (states(answer, true_value) and not states(answer, false_value))


def corrects_premise(answer: str, true_value: str, false_value: str) -> bool:
    """The false premise was noticed and corrected: rejected, and the true value given."""
    return rejects_premise(answer, true_value, false_value) and states(answer, true_value)


def keeps_premise(answer: str) -> bool:
    """A true premise was answered, not wrongly denied."""
    return not denies(answer)
