"""Task buckets with explicit mix ratios: a seeded sampler that honours `data.mix`, with trust tiers weighting
which records of a bucket are drawn, and per-bucket statistics of what it did.

A bucket smaller than its share is drawn whole and then repeated (counted in the statistics); a bucket with
no records cannot be honoured, so the other ratios are renormalised and the bucket is reported empty.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Drawable(Protocol):
    """What the sampler reads of a row: SFT records and preference pairs both have these."""

    @property
    def bucket(self) -> str: ...

    @property
    def tier(self) -> int: ...


Row = TypeVar("Row", bound=Drawable)


@dataclass
class BucketStats:
    bucket: str
    available: int
    target_share: float  # as configured in data.mix
    drawn: int = 0
    repeated: int = 0  # draws beyond the bucket's size

    @property
    def note(self) -> str:
        if self.target_share > 0 and self.available == 0:
            return "empty: its share went to the other buckets"
        if self.target_share == 0:
            return "not in data.mix: not drawn"
        return f"{self.repeated} repeated" if self.repeated else ""


def _weighted_order(records: list[Row], tier_weight: float, rng: random.Random) -> list[Row]:
    """Records in a random order where a tier-t record comes early with weight tier_weight ** t
    (Efraimidis-Spirakis keys: weighted sampling without replacement)."""
    keyed = [(rng.random() ** (1.0 / tier_weight ** r.tier), i) for i, r in enumerate(records)]
    return [records[i] for _, i in sorted(keyed, reverse=True)]


def mix_sample(records: list[Row], mix: dict[str, float], total: int, tier_weight: float = 2.0,
               seed: int = 0) -> tuple[list[Row], list[BucketStats]]:
    """Draw `total` records (or preference pairs) with bucket shares as in `mix` (ratios, any scale)."""
    rng = random.Random(seed)
    by_bucket: dict[str, list[Row]] = defaultdict(list)
    for record in records:
        by_bucket[record.bucket].append(record)
    configured = sum(r for r in mix.values() if r > 0)
    stats = {b: BucketStats(b, len(by_bucket.get(b, [])), max(r, 0.0) / configured if configured else 0.0)
             for b, r in mix.items()}
    for bucket in by_bucket.keys() - stats.keys():
        stats[bucket] = BucketStats(bucket, len(by_bucket[bucket]), 0.0)
    live = {b: r for b, r in mix.items() if r > 0 and by_bucket.get(b)}
    scale = sum(live.values())
    counts = _apportion(total, {b: r / scale for b, r in live.items()}) if scale else {}
    drawn: list[Row] = []
    for bucket, count in counts.items():
        pool = _weighted_order(by_bucket[bucket], tier_weight, rng)
        picks = pool[:count] + [rng.choice(pool) for _ in range(count - len(pool))]
        stats[bucket].drawn = count
        stats[bucket].repeated = max(0, count - len(pool))
        drawn += picks
    rng.shuffle(drawn)
    return drawn, sorted(stats.values(), key=lambda s: s.bucket)


def _apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to `total`, each within one of total * share (largest remainders)."""
    exact = {b: total * s for b, s in shares.items()}
    counts = {b: int(v) for b, v in exact.items()}
    for bucket in sorted(exact, key=lambda b: exact[b] - counts[b], reverse=True)[: total - sum(counts.values())]:
        counts[bucket] += 1
    return counts
