"""The ingest pipeline: rows -> schema -> trust -> quality -> contamination -> exact dedup -> near dedup.

Every step reports rows in, kept, removed and quarantined, and every row that is not kept comes out as a
`Rejected` with its origin and reason: quarantined when the row itself is bad (schema, untrusted source),
removed when it is fine but must not be trained on (a leak of an evaluation item, a duplicate, a repost).
The quality step applies to model-written sources only (`synthetic: true`).
Duplicates are checked against the existing pool and earlier rows of the same input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar


from pydantic import ValidationError

from reverie.data.dedup import ContaminationIndex, NearDuplicateIndex, Signature
from reverie.data.readers import RawRow
from reverie.data.quality import check_text
from reverie.data.records import Provenance, Record, Rejected
from reverie.progress import progress_bar
from reverie.validation import brief

RECORD_FIELDS = {"text", "prompt", "completion", "bucket", "meta"}


@dataclass
class StepReport:
    step: str
    rows_in: int
    kept: int = 0
    removed: int = 0
    quarantined: int = 0


JSON_BUCKET = "structured-output"  # rows of this bucket answer in JSON


@dataclass
class SourceSpec:
    name: str
    tier: int
    licence: str
    synthetic: bool = False


@dataclass
class PoolIndex:
    """What is already in the pool: exact ids and near-duplicate signatures, with each record's source."""

    near: NearDuplicateIndex
    sources: dict[str, str] = field(default_factory=dict)  # record id -> source name

    def add(self, record: Record, signature: Signature) -> None:
        self.sources[record.id] = record.provenance.source
        self.near.add(record.id, signature)

    @classmethod
    def build(cls, records: Iterable[Record], threshold: float) -> PoolIndex:
        records = list(records)
        index = cls(NearDuplicateIndex(threshold))
        for record, signature in zip(records, index.near.signatures([r.near_dedup_text() for r in records])):
            index.add(record, signature)
        return index


@dataclass
class IngestResult:
    records: list[Record]
    rejected: list[Rejected]
    steps: list[StepReport]


def _schema(rows: Iterable[RawRow], source: SourceSpec, bucket: str, now: float,
            rejected: list[Rejected]) -> tuple[list[Record], StepReport]:
    records: list[Record] = []
    report = StepReport("schema", 0)
    for row in rows:
        report.rows_in += 1
        reason = row.error
        if row.fields is not None and not isinstance(row.fields.get("meta", {}), dict):
            reason = f"meta: expected an object, got {type(row.fields['meta']).__name__}"
        elif row.fields is not None:
            unknown = sorted(set(row.fields) - RECORD_FIELDS)
            fields = {k: v for k, v in row.fields.items() if k in RECORD_FIELDS}
            fields["meta"] = {**fields.get("meta", {}), **{k: row.fields[k] for k in unknown}}
            fields.setdefault("bucket", bucket)
            try:
                provenance = Provenance(source=source.name, tier=source.tier, licence=source.licence,
                                        origin=row.origin, ingested_at=now)
                records.append(Record(**fields, provenance=provenance))
                continue
            except ValidationError as exc:
                reason = brief(exc)
        rejected.append(Rejected(origin=row.origin, step="schema", reason=reason, row=row.raw))
        report.quarantined += 1
    report.kept = len(records)
    return records, report


Row = TypeVar("Row")


def run_step(label: str, name: str, candidates: list[Row], verdict: Callable[[Row], str | None], quarantine: bool,
             rejected: list[Rejected], steps: list[StepReport], described: Callable[[Row], tuple[str, Any]],
             ) -> list[Row]:
    """One ingest step: keep the rows `verdict` passes; every other row goes to `rejected` with its reason (its
    origin and stored form from `described`), counted as quarantined or removed in the step's report."""
    report = StepReport(name, len(candidates))
    kept = []
    with progress_bar(label, len(candidates)) as bar:
        for row in candidates:
            bar.advance()
            reason = verdict(row)
            if reason is None:
                kept.append(row)
                continue
            origin, stored = described(row)
            rejected.append(Rejected(origin=origin, step=name, reason=reason, row=stored))
            if quarantine:
                report.quarantined += 1
            else:
                report.removed += 1
    report.kept = len(kept)
    steps.append(report)
    return kept


def ingest(rows: Iterable[RawRow], source: SourceSpec, bucket: str, pool: PoolIndex, min_tier: int,
           contamination: ContaminationIndex) -> IngestResult:
    """Run every step; `pool` is extended with the kept records, so several inputs can be ingested in turn."""
    rejected: list[Rejected] = []
    records, schema = _schema(rows, source, bucket, time.time(), rejected)
    steps = [schema]

    def step(name: str, candidates: list[Record], verdict: Callable[[Record], str | None],
             quarantine: bool) -> list[Record]:
        return run_step(f"ingest: {name}", name, candidates, verdict, quarantine, rejected, steps,
                        lambda r: (r.provenance.origin, r.model_dump(exclude={"provenance"})))

    below = f"source {source.name!r} has tier {source.tier}, below data.min_tier {min_tier}"
    records = step("trust", records, lambda r: below if source.tier < min_tier else None, quarantine=True)

    def quality(record: Record) -> str | None:
        if not source.synthetic:
            return None
        text = record.text if record.text is not None else str(record.completion)
        return check_text(text, expects_json=record.bucket == JSON_BUCKET or record.meta.get("format") == "json")

    records = step("quality", records, quality, quarantine=True)

    def leak(record: Record) -> str | None:
        item = contamination.leak(record.content())
        if item is None:
            return None
        return f"overlaps evaluation item {item} ({contamination.span}-word span or whole item)"

    records = step("contamination", records, leak, quarantine=False)

    seen = dict(pool.sources)  # record id -> source, growing with this input's rows

    def duplicate(record: Record) -> str | None:
        if record.id in seen:
            return _copy_reason("exact duplicate", record, record.id, seen[record.id])
        seen[record.id] = record.provenance.source
        return None

    records = step("exact dedup", records, duplicate, quarantine=False)
    signatures = dict(zip((r.id for r in records), pool.near.signatures([r.near_dedup_text() for r in records])))

    def near_duplicate(record: Record) -> str | None:
        match = pool.near.match(signatures[record.id])
        if match is not None:
            return _copy_reason("near duplicate", record, match, pool.sources[match])
        pool.add(record, signatures[record.id])
        return None

    records = step("near dedup", records, near_duplicate, quarantine=False)
    return IngestResult(records, rejected, steps)


def _copy_reason(kind: str, record: Record, original: str, original_source: str) -> str:
    if original_source != record.provenance.source:
        return f"repost: {kind} of {original} from source {original_source!r}"
    return f"{kind} of {original}"
