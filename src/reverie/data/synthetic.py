"""Checks that the model's own answers must pass before they are trained on (self-consistency voting)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from reverie.data.text import contains_phrase, normalize


@dataclass(frozen=True)
class Vote:
    answer: str  # the most common original spelling of the winning answer
    share: float  # fraction of samples that gave it


def majority_vote(samples: list[str]) -> Vote | None:
    """The most frequent answer after normalisation, with its share of the votes; None on a tie or no answer."""
    normalized = [normalize(s) for s in samples]
    counts = Counter(n for n in normalized if n).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    winner, count = counts[0]
    spelling = Counter(s for s, n in zip(samples, normalized) if n == winner).most_common(1)[0][0]
    return Vote(answer=spelling, share=count / len(samples))


def supported_by(answer: str, document: str) -> bool:
    """An answer agrees with a document when its normalised text occurs there."""
    return contains_phrase(document, answer)
