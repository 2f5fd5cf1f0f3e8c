"""Duplicate and leakage checks.

- Exact: the hash of the normalised text (`Record.id`).
- Near: MinHash signatures of word 3-gram shingles in an LSH index (rensa's R-MinHash and RMinHashLSH, in
  Rust). The index is banded for a threshold below the one asked for, so that pairs just above it are not
  missed by LSH's banding (plain LSH misses a good share of them); every candidate is then kept only if its
  estimated Jaccard similarity reaches the asked threshold, so the extra candidates cost checks, not precision.
- Contamination: a training text that shares an n-word span with an evaluation item (or contains a short
  evaluation item whole) would let the Gate measure memorisation instead of learning.
"""

from __future__ import annotations

from rensa import RMinHash, RMinHashLSH

from reverie.data.text import normalize

SHINGLE_WORDS = 3
SIGNATURE_SEED = 1  # fixed: only signatures made with the same seed can be compared

Signature = RMinHash
"""A text's MinHash signature: what `NearDuplicateIndex.signatures` makes and `match` and `add` take."""


def shingles(text: str, size: int = SHINGLE_WORDS) -> list[str]:
    """The distinct word n-grams of the normalised text (the whole text when it is shorter)."""
    words = normalize(text).split()
    if len(words) <= size:
        return [" ".join(words)]
    return list({" ".join(gram) for gram in zip(*(words[i:] for i in range(size)))})


RECALL_MARGIN = 0.15  # how far below the threshold the LSH bands are tuned


def lsh_bands(threshold: float, num_perm: int) -> int:
    """How many bands to cut a signature into: the fewest (so the most rows each, and the fewest chance
    candidates) whose S-curve midpoint (1/bands)^(1/rows) lies at or below `threshold`. rensa's index takes
    only bands of equal size, so `bands` divides `num_perm`."""
    divisors = [bands for bands in range(1, num_perm + 1) if num_perm % bands == 0]
    return next((bands for bands in divisors if (1 / bands) ** (bands / num_perm) <= threshold), num_perm)


class NearDuplicateIndex:
    """Keys with MinHash signatures, queried for the most similar key above the threshold."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128):
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        banded = max(0.05, threshold - RECALL_MARGIN)
        self._lsh = RMinHashLSH(banded, num_perm, lsh_bands(banded, num_perm))
        self._keys: list[str] = []  # rensa's index holds integers: the position here
        self._signatures: list[Signature] = []
        self._known: set[str] = set()

    def signatures(self, texts: list[str]) -> list[Signature]:
        """Signatures for many texts at once (one call into rensa for the whole batch)."""
        return RMinHash.from_token_sets([shingles(t) for t in texts], self.num_perm, SIGNATURE_SEED)

    def match(self, signature: Signature) -> str | None:
        """The indexed key most similar to `signature`, if it reaches the threshold."""
        best, best_score = None, self.threshold
        for position in self._lsh.query(signature):
            score = signature.jaccard(self._signatures[position])
            if score >= best_score:
                best, best_score = self._keys[position], score
        return best

    def add(self, key: str, signature: Signature) -> None:
        if key not in self._known:
            self._lsh.insert(len(self._keys), signature)
            self._known.add(key)
            self._keys.append(key)
            self._signatures.append(signature)


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
