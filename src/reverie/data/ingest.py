"""The ingest pipeline: rows -> schema -> trust -> quality -> contamination -> exact dedup -> near dedup.

Every step reports rows in, kept, removed and quarantined, and every row that is not kept comes out as a
`Rejected` with its origin and reason: quarantined when the row itself is bad (schema, untrusted source),
removed when it is fine but must not be trained on (a leak of an evaluation item, a duplicate, a repost).
The quality step applies to model-written sources only (`synthetic: true`).
Duplicates are checked against the existing pool and earlier rows of the same input.

Rows stream through in chunks, so an input larger than memory costs one chunk of text plus what the dedup
steps must remember of every kept row (its id and MinHash signature). The first four steps judge a row on its
own (`RowChecks`), so the shards of a distributed ingest (data/ingest_shards.py) can run them apart; the dedup
steps (`Deduplicator`) then see every row once, in input order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

from pydantic import ValidationError

from reverie.data.dedup import ContaminationIndex, NearDuplicateIndex, Signature
from reverie.data.readers import RawRow
from reverie.data.quality import check_text
from reverie.data.records import Provenance, Record, Rejected
from reverie.progress import progress_bar
from reverie.validation import brief

RECORD_FIELDS = {"text", "prompt", "completion", "bucket", "meta"}
T = TypeVar("T")
STEPS = ("schema", "trust", "quality", "contamination", "exact dedup", "near dedup")
ROW_STEPS = STEPS[:4]  # judged by the row alone (RowChecks); the rest need every earlier row (Deduplicator)
CHUNK_ROWS = 2048  # rows read before their signatures are made (one call into rensa) and deduplicated


@dataclass
class StepReport:
    step: str
    rows_in: int
    kept: int = 0
    removed: int = 0
    quarantined: int = 0


JSON_BUCKET = "structured-output"  # rows of this bucket answer in JSON

Outcome = Record | Rejected
"""What ingest makes of one row: the record it keeps, or the row rejected with its step and reason."""


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
        """The index of `records`, read a chunk at a time."""
        index = cls(NearDuplicateIndex(threshold))
        for chunk in batched(records, CHUNK_ROWS):
            for record, signature in zip(chunk, index.near.signatures([r.near_dedup_text() for r in chunk])):
                index.add(record, signature)
        return index


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` consecutive items (the last one shorter): itertools.batched, before Python 3.12."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def step_reports() -> dict[str, StepReport]:
    """An empty report for every step, in pipeline order."""
    return {name: StepReport(name, 0) for name in STEPS}


def _judge(report: StepReport, reason: str | None, quarantine: bool, origin: str, stored: Any) -> Rejected | None:
    """Count one row through a step; the Rejected when it does not pass."""
    report.rows_in += 1
    if reason is None:
        report.kept += 1
        return None
    if quarantine:
        report.quarantined += 1
    else:
        report.removed += 1
    return Rejected(origin=origin, step=report.step, reason=reason, row=stored)


def _stored(record: Record) -> dict[str, Any]:
    return record.model_dump(exclude={"provenance"})


class RowChecks:
    """Schema, trust, quality and contamination: the steps that judge a row by itself."""

    def __init__(self, source: SourceSpec, bucket: str, min_tier: int, contamination: ContaminationIndex,
                 reports: dict[str, StepReport], now: float | None = None):
        self.source, self.bucket, self.min_tier = source, bucket, min_tier
        self.contamination = contamination
        self.reports = reports
        self.now = time.time() if now is None else now

    def check(self, row: RawRow) -> Outcome:
        parsed = self._parse(row)
        if rejected := _judge(self.reports["schema"], parsed if isinstance(parsed, str) else None, True, row.origin,
                              row.raw):
            return rejected
        record: Record = parsed
        below = f"source {self.source.name!r} has tier {self.source.tier}, below data.min_tier {self.min_tier}"
        verdicts: list[tuple[str, Callable[[], str | None], bool]] = [
            ("trust", lambda: below if self.source.tier < self.min_tier else None, True),
            ("quality", lambda: self._quality(record), True),
            ("contamination", lambda: self._leak(record), False),
        ]
        for name, verdict, quarantine in verdicts:  # a row rejected by one step never reaches the next
            if rejected := _judge(self.reports[name], verdict(), quarantine, row.origin, _stored(record)):
                return rejected
        return record

    def _parse(self, row: RawRow) -> Record | str:
        """The row as a Record, or why it is not one."""
        if row.fields is None:
            return row.error
        if not isinstance(row.fields.get("meta", {}), dict):
            return f"meta: expected an object, got {type(row.fields['meta']).__name__}"
        unknown = sorted(set(row.fields) - RECORD_FIELDS)
        fields = {k: v for k, v in row.fields.items() if k in RECORD_FIELDS}
        fields["meta"] = {**fields.get("meta", {}), **{k: row.fields[k] for k in unknown}}
        fields.setdefault("bucket", self.bucket)
        try:
            provenance = Provenance(source=self.source.name, tier=self.source.tier, licence=self.source.licence,
                                    origin=row.origin, ingested_at=self.now)
            return Record(**fields, provenance=provenance)
        except ValidationError as exc:
            return brief(exc)

    def _quality(self, record: Record) -> str | None:
        if not self.source.synthetic:
            return None
        text = record.text if record.text is not None else str(record.completion)
        return check_text(text, expects_json=record.bucket == JSON_BUCKET or record.meta.get("format") == "json")

    def _leak(self, record: Record) -> str | None:
        item = self.contamination.leak(record.content())
        if item is None:
            return None
        return f"overlaps evaluation item {item} ({self.contamination.span}-word span or whole item)"


class Deduplicator:
    """Exact and near dedup against the pool and every earlier row of the input. The pool index grows with the
    kept rows, so several inputs can be ingested in turn."""

    def __init__(self, pool: PoolIndex, reports: dict[str, StepReport]):
        self.pool = pool
        self.reports = reports
        self.seen = dict(pool.sources)  # record id -> source, growing with this input's rows

    def chunk(self, records: list[Record], signatures: list[Signature] | None = None) -> Iterator[Outcome]:
        """Each record kept or rejected, in order. Signatures are made here, for the exact step's survivors,
        unless given (one per record, by shards that made them already)."""
        unique: list[tuple[Record, Signature | None]] = []
        for position, record in enumerate(records):
            reason = None
            if record.id in self.seen:
                reason = _copy_reason("exact duplicate", record, record.id, self.seen[record.id])
            else:
                self.seen[record.id] = record.provenance.source
            if rejected := _judge(self.reports["exact dedup"], reason, False, record.provenance.origin,
                                  _stored(record)):
                yield rejected
            else:
                unique.append((record, signatures[position] if signatures else None))
        if signatures is None:
            made = self.pool.near.signatures([record.near_dedup_text() for record, _ in unique])
            unique = [(record, signature) for (record, _), signature in zip(unique, made)]
        for record, signature in unique:
            match = self.pool.near.match(signature)
            reason = None if match is None else _copy_reason("near duplicate", record, match, self.pool.sources[match])
            if rejected := _judge(self.reports["near dedup"], reason, False, record.provenance.origin,
                                  _stored(record)):
                yield rejected
            else:
                self.pool.add(record, signature)
                yield record


def screen(rows: Iterable[RawRow], source: SourceSpec, bucket: str, pool: PoolIndex, min_tier: int,
           contamination: ContaminationIndex, reports: dict[str, StepReport]) -> Iterator[Outcome]:
    """Every step over `rows`, streamed: the outcomes of each chunk once it is done; `reports` counts them."""
    checks = RowChecks(source, bucket, min_tier, contamination, reports)
    dedup = Deduplicator(pool, reports)
    with progress_bar(f"ingest from {source.name}", None) as bar:
        for chunk in batched(rows, CHUNK_ROWS):
            passed: list[Record] = []
            for row in chunk:
                outcome = checks.check(row)
                if isinstance(outcome, Record):
                    passed.append(outcome)
                else:
                    yield outcome
            yield from dedup.chunk(passed)
            bar.advance(len(chunk), status=f"{reports['near dedup'].kept} kept")


@dataclass
class IngestResult:
    records: list[Record]
    rejected: list[Rejected]
    steps: list[StepReport]


def ingest(rows: Iterable[RawRow], source: SourceSpec, bucket: str, pool: PoolIndex, min_tier: int,
           contamination: ContaminationIndex) -> IngestResult:
    """Every step, the outcomes collected in memory (the pool streams them to disk instead: data/pool.py)."""
    reports = step_reports()
    records: list[Record] = []
    rejected: list[Rejected] = []
    for outcome in screen(rows, source, bucket, pool, min_tier, contamination, reports):
        (records if isinstance(outcome, Record) else rejected).append(outcome)
    return IngestResult(records, rejected, list(reports.values()))


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



def _copy_reason(kind: str, record: Record, original: str, original_source: str) -> str:
    if original_source != record.provenance.source:
        return f"repost: {kind} of {original} from source {original_source!r}"
    return f"{kind} of {original}"
