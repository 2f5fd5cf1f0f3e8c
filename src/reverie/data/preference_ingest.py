"""Ingesting preference pairs: rows -> schema -> prompt length -> trust -> contamination -> exact dedup -> near dedup.

As for the pool (data/ingest.py), every step reports rows in, kept, removed and quarantined, and every row not
kept comes out as a `Rejected` with its step and reason: quarantined when the pair itself is bad (its shape, a
prompt too long for the model, an untrusted source), removed when it is fine but must not be trained on (a leak
of an evaluation item, a duplicate). Rows are read in TRL's standard format {prompt, chosen, rejected: text} or
its conversational one (prompt: messages ending in a user turn; chosen, rejected: text or one assistant
message), with an optional numeric `margin` (a CSV cell that reads as a number counts); other keys go to
`meta`. The caller measures prompts (`count_tokens`, the model's tokenizer), so this layer needs no torch.

A near duplicate repeats an earlier pair's prompt and chosen answer and its rejected answer too: the same chosen
answer against a different rejected one is another comparison (AlpacaEval sets one reference answer against a
dozen models'), so prompt + chosen alone would discard most of such a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import TypeAdapter, ValidationError

from reverie.data.datasets import remove_orphans
from reverie.data.dedup import ContaminationIndex, NearDuplicateIndex, Signature
from reverie.data.ingest import SourceSpec, StepReport, run_step
from reverie.data.jsonl import write_jsonl
from reverie.data.pool import NAME_PATTERN, contamination_index, source_spec
from reverie.data.preference import PAIRS_FILE, Message, PreferencePair, load_pairs, preference_datasets
from reverie.data.readers import RawRow, read_rows
from reverie.data.records import Rejected
from reverie.data.text import surrogate_problem
from reverie.errors import ReverieError
from reverie.registry import DatasetRecord
from reverie.validation import brief
from reverie.workspace import Workspace

PAIR_FIELDS = {"prompt", "chosen", "rejected", "margin", "bucket", "meta"}
SIDE_FORMAT = "a string or one assistant message"
PROMPT_FORMAT = "a string or a list of {role, content} messages"
_MESSAGES = TypeAdapter(list[Message])


@dataclass
class PairChecks:
    """What every pair is checked against besides its own shape."""

    count_tokens: Callable[[str], int]  # tokens of a prompt, by the model's tokenizer
    max_prompt_tokens: int
    min_tier: int
    contamination: ContaminationIndex

    @classmethod
    def of(cls, ws: Workspace, count_tokens: Callable[[str], int], min_tier: int | None = None) -> PairChecks:
        """The workspace's limits (align.max_prompt_tokens, data.min_tier unless `min_tier` is given) and its
        evaluation items as they are now."""
        tier = ws.config.data.min_tier if min_tier is None else min_tier
        return cls(count_tokens, ws.config.align.max_prompt_tokens, tier, contamination_index(ws))


class PairIndex:
    """The pairs already kept: ids with their source, and near-duplicate groups by prompt + chosen answer."""

    def __init__(self, threshold: float):
        self.sources: dict[str, str] = {}  # pair id -> source
        self._heads = NearDuplicateIndex(threshold)  # prompt + chosen; key: a group's first pair
        # per group (pairs whose prompt and chosen answer nearly match): (pair id, rejected answer's signature)
        self._groups: dict[str, list[tuple[str, Signature]]] = {}

    @classmethod
    def build(cls, pairs: Iterable[PreferencePair], threshold: float) -> PairIndex:
        pairs = list(pairs)
        index = cls(threshold)
        for pair, signature in zip(pairs, index.signatures(pairs)):
            index.add(pair, signature)
        return index

    def signatures(self, pairs: list[PreferencePair]) -> list[tuple[Signature, Signature]]:
        """(prompt + chosen, rejected) signatures, computed in bulk."""
        heads = self._heads.signatures([f"{p.prompt_text()}\n{p.chosen}" for p in pairs])
        return list(zip(heads, self._heads.signatures([p.rejected for p in pairs])))

    def match(self, signature: tuple[Signature, Signature]) -> str | None:
        """The id of a kept pair this one nearly repeats on both sides, if any."""
        head, tail = signature
        group = self._heads.match(head)
        if group is None:
            return None
        return next((key for key, other in self._groups[group] if tail.jaccard(other) >= self._heads.threshold),
                    None)

    def add(self, pair: PreferencePair, signature: tuple[Signature, Signature]) -> None:
        head, tail = signature
        self.sources[pair.id] = pair.source
        group = self._heads.match(head)
        if group is None:
            group = pair.id
            self._heads.add(group, head)
            self._groups[group] = []
        self._groups[group].append((pair.id, tail))


@dataclass
class PreferenceIngestResult:
    pairs: list[PreferencePair]
    rejected: list[Rejected]
    steps: list[StepReport]


def leak_reason(pair: PreferencePair, contamination: ContaminationIndex) -> str | None:
    """Why the pair overlaps an evaluation item, or None. Prompt and each answer are joined: a question with its
    answer is one evaluation item."""
    for text in (f"{pair.prompt_text()}\n{pair.chosen}", f"{pair.prompt_text()}\n{pair.rejected}"):
        if (item := contamination.leak(text)) is not None:
            return f"overlaps evaluation item {item} ({contamination.span}-word span or whole item)"
    return None


def uncontaminated(pairs: list[PreferencePair], contamination: ContaminationIndex,
                   ) -> tuple[list[PreferencePair], list[Rejected]]:
    """The pairs that overlap no evaluation item as the items are now (ingest checked those of its day), and the
    others with their reasons: every reader that trains on stored pairs checks again."""
    kept, rejected = [], []
    for pair in pairs:
        if (reason := leak_reason(pair, contamination)) is None:
            kept.append(pair)
        else:
            rejected.append(Rejected(origin=pair.origin, step="contamination", reason=reason, row=pair.model_dump()))
    return kept, rejected


def pair_problem(pair: PreferencePair) -> str | None:
    """Why a well-typed pair still teaches nothing or cannot be trained on, or None."""
    for side in ("chosen", "rejected"):
        if not getattr(pair, side).strip():
            return f"{side} is empty"
    if not pair.prompt_text().strip():
        return "prompt is empty"
    if isinstance(pair.prompt, list) and pair.prompt[-1].role != "user":
        return f"prompt: the conversation must end with a user turn, not {pair.prompt[-1].role!r}"
    if _spaced(pair.chosen) == _spaced(pair.rejected):
        return "chosen and rejected are the same answer (up to whitespace): nothing to prefer"
    return None


def _spaced(text: str) -> str:
    """Whitespace collapsed, nothing else: case and punctuation can be what a pair is about (an instruction to
    write in alternating case)."""
    return " ".join(text.split())


def _side(fields: dict[str, Any], side: str) -> str:
    """A side's text; raises ValueError with the reason when it is missing or of another shape."""
    if side not in fields:
        raise ValueError(f"missing {side!r}")
    value = fields[side]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant" and set(value[0]) == {"role", "content"}:
        value = value[0]["content"]
    if not isinstance(value, str):
        shown = f"{len(value)} message(s)" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{side}: expected {SIDE_FORMAT}, got {shown}")
    return value


def _prompt(value: Any) -> str | list[Message]:
    """The prompt as text or messages; raises ValueError with the reason (one, not one per format tried)."""
    if isinstance(value, str):
        if (problem := surrogate_problem(value)) is not None:
            raise ValueError(f"prompt: {problem}")
        return value
    if not isinstance(value, list):
        raise ValueError(f"prompt: expected {PROMPT_FORMAT}, got {type(value).__name__}")
    try:
        return _MESSAGES.validate_python(value)
    except ValidationError as exc:
        raise ValueError(f"prompt.{brief(exc)}") from None


def _margin(value: Any) -> float | None:
    """A finite number; a CSV cell reads as text, so a numeric string counts."""
    if value is None:
        return None
    number = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # not a number; an integer beyond a float
            pass
    if not math.isfinite(number):
        raise ValueError(f"margin: expected a finite number, got {json.dumps(value, default=str)[:60]}")
    return number


def _parse(row: RawRow, source: SourceSpec, bucket: str) -> PreferencePair:
    """The pair a row holds; raises ValueError (or ValidationError) with the reason it holds none."""
    if row.fields is None:
        raise ValueError(row.error)
    fields = row.fields
    if "prompt" not in fields:
        raise ValueError("missing 'prompt'")
    meta = fields.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"meta: expected an object, got {type(meta).__name__}")
    extra = {k: v for k, v in fields.items() if k not in PAIR_FIELDS}
    return PreferencePair(prompt=_prompt(fields["prompt"]), chosen=_side(fields, "chosen"),
                          rejected=_side(fields, "rejected"),
                          margin=_margin(fields.get("margin")), bucket=fields.get("bucket", bucket),
                          source=source.name, tier=source.tier, origin=row.origin, meta={**meta, **extra})


def ingest_pairs(rows: Iterable[RawRow], source: SourceSpec, bucket: str, index: PairIndex,
                 checks: PairChecks) -> PreferenceIngestResult:
    """Read rows into pairs of `source` and screen them; `index` grows by the kept pairs."""
    pairs: list[PreferencePair] = []
    rejected: list[Rejected] = []
    for row in rows:
        try:
            pairs.append(_parse(row, source, bucket))
        except ValidationError as exc:
            rejected.append(Rejected(origin=row.origin, step="schema", reason=brief(exc), row=row.raw))
        except ValueError as exc:
            rejected.append(Rejected(origin=row.origin, step="schema", reason=str(exc), row=row.raw))
    result = screen_pairs(pairs, index, checks)
    schema = result.steps[0]
    schema.rows_in += len(rejected)
    schema.quarantined += len(rejected)
    return PreferenceIngestResult(result.pairs, rejected + result.rejected, result.steps)


def screen_pairs(pairs: list[PreferencePair], index: PairIndex, checks: PairChecks) -> PreferenceIngestResult:
    """Every step after reading, for pairs from a file or made in code (feedback, the red-team library, votes),
    which carry their own source and tier; `index` grows by the kept pairs."""
    rejected: list[Rejected] = []
    steps: list[StepReport] = []

    def step(name: str, candidates: list[PreferencePair], verdict: Callable[[PreferencePair], str | None],
             quarantine: bool) -> list[PreferencePair]:
        return run_step(f"preference ingest: {name}", name, candidates, verdict, quarantine, rejected, steps,
                        lambda pair: (pair.origin, pair.model_dump()))

    pairs = step("schema", pairs, pair_problem, quarantine=True)

    def too_long(pair: PreferencePair) -> str | None:
        tokens = checks.count_tokens(pair.prompt_text())
        if tokens <= checks.max_prompt_tokens:
            return None
        return f"prompt has {tokens} tokens, over align.max_prompt_tokens {checks.max_prompt_tokens}"

    pairs = step("prompt length", pairs, too_long, quarantine=True)

    def untrusted(pair: PreferencePair) -> str | None:
        if pair.tier >= checks.min_tier:
            return None
        return f"source {pair.source!r} has tier {pair.tier}, below data.min_tier {checks.min_tier}"

    pairs = step("trust", pairs, untrusted, quarantine=True)

    def leak(pair: PreferencePair) -> str | None:
        return leak_reason(pair, checks.contamination)

    pairs = step("contamination", pairs, leak, quarantine=False)
    seen = dict(index.sources)  # pair id -> source, growing with this input's pairs

    def duplicate(pair: PreferencePair) -> str | None:
        if pair.id in seen:
            return _copy_reason("exact duplicate", pair, pair.id, seen[pair.id])
        seen[pair.id] = pair.source
        return None

    pairs = step("exact dedup", pairs, duplicate, quarantine=False)
    signatures = dict(zip((p.id for p in pairs), index.signatures(pairs)))

    def near_duplicate(pair: PreferencePair) -> str | None:
        if (match := index.match(signatures[pair.id])) is not None:
            return _copy_reason("near duplicate", pair, match, index.sources[match])
        index.add(pair, signatures[pair.id])
        return None

    pairs = step("near dedup", pairs, near_duplicate, quarantine=False)
    return PreferenceIngestResult(pairs, rejected, steps)


def _copy_reason(kind: str, pair: PreferencePair, original: str, original_source: str) -> str:
    if original_source != pair.source:
        return f"repost: {kind} of pair {original} from source {original_source!r}"
    return f"{kind} of pair {original}"


def ingest_preference_path(ws: Workspace, path: Path, source: str, bucket: str, name: str | None,
                           count_tokens: Callable[[str], int]) -> tuple[DatasetRecord, PreferenceIngestResult]:
    """Ingest a file of preference pairs as a dataset of kind "preference", deduplicated against every
    registered preference dataset."""
    name = name or path.stem
    if not name or any(not (c.isalnum() or c in "_.-") for c in name):
        raise ReverieError(f"dataset name {name!r}: use {NAME_PATTERN}")
    if path.is_dir():
        raise ReverieError(f"{path}: preference pairs are read from one .jsonl, .csv or .parquet file, not a folder")
    spec = source_spec(ws, source)
    data = ws.config.data
    index = PairIndex.build((p for d in preference_datasets(ws) for p in load_pairs(ws, d)),
                            data.near_duplicate_threshold)
    checks = PairChecks.of(ws, count_tokens)
    result = ingest_pairs(read_rows(path), spec, bucket, index, checks)
    if result.steps[0].rows_in == 0:
        raise ReverieError(f"{path}: no rows to ingest (an empty file); nothing was registered")
    manifest = {"input": str(path.resolve()), "input_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "source": spec.__dict__, "bucket": bucket}
    with ws.cycle_lock():  # a cycle's garbage collection must not see the artifact before it is registered
        remove_orphans(ws)
        dataset = save_pairs(ws, f"preference/{name}", f"preference ingest {path.name} from {source} (tier "
                             f"{spec.tier}, {spec.licence})", result, checks, manifest, cycle_id=None)
        ws.registry.add_dataset(dataset)
    return dataset, result


def save_pairs(ws: Workspace, name: str, source: str, result: PreferenceIngestResult, checks: PairChecks,
               manifest: dict[str, Any], *, cycle_id: str | None, strategy: str | None = None) -> DatasetRecord:
    """Screened pairs as a dataset of kind "preference": pairs.jsonl, rejected.jsonl with every reason, and a
    manifest of what was read, each step's counts and the limits applied. The caller registers it."""
    with ws.artifacts.stage() as staged:
        write_jsonl(staged.path / PAIRS_FILE, result.pairs)
        write_jsonl(staged.path / "rejected.jsonl", result.rejected)
        (staged.path / "manifest.json").write_text(json.dumps(manifest | {
            "steps": [s.__dict__ for s in result.steps],
            "checks": {"max_prompt_tokens": checks.max_prompt_tokens, "min_tier": checks.min_tier,
                       "near_duplicate_threshold": ws.config.data.near_duplicate_threshold,
                       "contamination_span": checks.contamination.span},
        }, indent=2) + "\n")
    return DatasetRecord(staged.hash, name, len(result.pairs), source, time.time(), kind="preference",
                         cycle_id=cycle_id, strategy=strategy)
