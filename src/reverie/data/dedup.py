"""Duplicate and leakage checks.

- Exact: the hash of the normalised text (`Record.id`).
- Near: MinHash signatures of word 3-gram shingles in an LSH index (datasketch). The index is banded for a
  threshold below the one asked for, so that pairs just above it are not missed by LSH's banding (plain LSH
  misses a good share of them); every candidate is then kept only if its estimated Jaccard similarity
  reaches the asked threshold, so the extra candidates cost checks, not precision.
- Contamination: a training text that shares an n-word span with an evaluation item (or contains a short
  evaluation item whole) would let the Gate measure memorisation instead of learning.
"""

from __future__ import annotations

from datasketch import MinHash, MinHashLSH

from reverie.data.text import normalize

SHINGLE_WORDS = 3


def shingles(text: str, size: int = SHINGLE_WORDS) -> list[bytes]:
    """The distinct word n-grams of the normalised text (the whole text when it is shorter)."""
    words = normalize(text).split()
    if len(words) <= size:
        return [" ".join(words).encode()]
    return list({" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)})


RECALL_MARGIN = 0.15  # how far below the threshold the LSH bands are tuned


class NearDuplicateIndex:
    """Keys with MinHash signatures, queried for the most similar key above the threshold."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128):
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self._lsh = MinHashLSH(threshold=max(0.05, threshold - RECALL_MARGIN), num_perm=num_perm)
        self._signatures: dict[str, MinHash] = {}

    def signatures(self, texts: list[str]) -> list[MinHash]:
        """Signatures for many texts at once (datasketch's bulk path: one vectorised pass per text)."""
        return MinHash.bulk([shingles(t) for t in texts], num_perm=self.num_perm)

    def match(self, signature: MinHash) -> str | None:
        """The indexed key most similar to `signature`, if it reaches the threshold."""
        best, best_score = None, self.threshold
        for key in self._lsh.query(signature):
            score = signature.jaccard(self._signatures[key])
            if score >= best_score:
                best, best_score = key, score
        return best

    def add(self, key: str, signature: MinHash) -> None:
        if key not in self._signatures:
            self._lsh.insert(key, signature)
            self._signatures[key] = signature


class ContaminationIndex:
    """Evaluation items, indexed by their n-word spans (short items by their whole normalised text)."""

    def __init__(self, items: dict[str, str], span: int = 8, min_whole_words: int = 4):
        self.span = span
        self._spans: dict[str, str] = {}
        self._whole: dict[str, str] = {}
        for key, text in items.items():
            words = normalize(text).split()
            if len(words) >= span:
                for i in range(len(words) - span + 1):
                    self._spans.setdefault(" ".join(words[i : i + span]), key)
            elif len(words) >= min_whole_words:  # shorter ones are too generic to call a leak
                self._whole[" ".join(words)] = key

    def leak(self, text: str) -> str | None:
        """The key of an evaluation item `text` overlaps, if any."""
        words = normalize(text).split()
        for i in range(len(words) - self.span + 1):
            if (key := self._spans.get(" ".join(words[i : i + self.span]))) is not None:
                return key
        padded = f" {' '.join(words)} "
        return next((key for whole, key in self._whole.items() if f" {whole} " in padded), None)
