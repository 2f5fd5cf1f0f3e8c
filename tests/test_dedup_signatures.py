"""Near-duplicate signatures (rensa's R-MinHash) and their index: banded below the threshold for recall,
candidates verified by estimated Jaccard for precision."""

from __future__ import annotations

import pickle
import random

import pytest

from reverie.data.dedup import NearDuplicateIndex, lsh_bands, shingles

WORDS = [f"w{i}" for i in range(3000)]


def texts_and_copies(count: int, changed: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`count` random 40-word texts and a copy of each with `changed` words replaced."""
    rng = random.Random(seed)
    originals = [rng.choices(WORDS, k=40) for _ in range(count)]
    copies = []
    for words in originals:
        words = list(words)
        for i in rng.sample(range(len(words)), changed):
            words[i] = rng.choice(WORDS)
        copies.append(words)
    return [" ".join(w) for w in originals], [" ".join(w) for w in copies]


def indexed(texts: list[str], threshold: float) -> tuple[NearDuplicateIndex, list]:
    index = NearDuplicateIndex(threshold)
    signatures = index.signatures(texts)
    for i, signature in enumerate(signatures):
        index.add(str(i), signature)
    return index, signatures


def test_copies_just_above_the_threshold_are_not_lost_to_banding() -> None:
    originals, copies = texts_and_copies(300, changed=2)  # exact 3-gram Jaccard about 0.7 to 0.8
    index, signatures = indexed(originals, threshold=0.7)
    above = [(i, s) for i, s in enumerate(index.signatures(copies)) if s.jaccard(signatures[i]) >= 0.7]
    assert len(above) > 150  # the case that banding at the threshold itself misses a good share of
    assert all(index.match(s) == str(i) for i, s in above)


def test_candidates_below_the_threshold_are_refused() -> None:
    originals, copies = texts_and_copies(300, changed=4)  # exact 3-gram Jaccard about 0.5 to 0.6
    index, signatures = indexed(originals, threshold=0.7)
    copy_signatures = index.signatures(copies)
    matches = [index.match(s) for s in copy_signatures]
    assert sum(m is None for m in matches) > 250
    assert all(copy_signatures[i].jaccard(signatures[int(m)]) >= 0.7 for i, m in enumerate(matches) if m)


def test_match_returns_the_most_similar_key() -> None:
    rng = random.Random(1)
    words = rng.choices(WORDS, k=40)
    near, nearer = list(words), list(words)
    near[5:9] = ["x1", "x2", "x3", "x4"]
    nearer[5] = "x1"
    index, _ = indexed([" ".join(near), " ".join(nearer)], threshold=0.5)
    [query] = index.signatures([" ".join(words)])
    assert index.match(query) == "1"


def test_a_key_added_twice_keeps_its_first_signature() -> None:
    index = NearDuplicateIndex(0.8)
    first, other = index.signatures([" ".join(WORDS[:30]), " ".join(WORDS[100:130])])
    index.add("a", first)
    index.add("a", other)
    assert index.match(first) == "a" and index.match(other) is None


def test_signatures_compare_normalised_word_shingles() -> None:
    index = NearDuplicateIndex(0.9)
    loud, plain = index.signatures(["THE owls, nest in hollow oak trees!", "owls nest in hollow oak trees"])
    assert loud.jaccard(plain) == 1.0
    assert sorted(shingles("An owl hoots")) == ["owl hoots"]  # no longer than a shingle: the whole text
    assert pickle.loads(pickle.dumps(loud)).jaccard(plain) == 1.0  # signatures can be stored


@pytest.mark.parametrize("num_perm", [64, 100, 128, 256])
@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.55, 0.65, 0.85])
def test_bands_put_the_lsh_threshold_at_or_below_the_banded_one(threshold: float, num_perm: int) -> None:
    bands = lsh_bands(threshold, num_perm)
    assert num_perm % bands == 0 and (1 / bands) ** (bands / num_perm) <= threshold
    fewer = [b for b in range(1, bands) if num_perm % b == 0]  # each would put it above: fewer recalled
    assert all((1 / b) ** (b / num_perm) > threshold for b in fewer)


def test_a_threshold_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="near-duplicate threshold must be in"):
        NearDuplicateIndex(1.5)
