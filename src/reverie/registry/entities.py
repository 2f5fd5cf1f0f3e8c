"""Plain records the registry stores. No torch, no I/O."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

# generator: writes self-edits; reward: a reward model (a sequence-classification head) that scores answers;
# removed: a candidate `reverie gc` retired: the record stays so that lineage reads, its weights are gone
ModelStatus = Literal["base", "candidate", "release", "rejected", "generator", "reward", "removed"]
RunStatus = Literal["running", "finished", "failed", "interrupted"]
# pool: an ingest; redteam: a red-team library version; learn / dream: what those phases trained on;
# quarantine: what Dream made and did not keep; replay: a Gate's failures; feedback: serving corrections to replay;
# preference: chosen/rejected pairs (data/preference.py).
DatasetKind = Literal["pool", "redteam", "learn", "dream", "quarantine", "replay", "feedback", "preference"]


@dataclass
class ModelRecord:
    """A model version: weights (an artifact or an external source) plus an optional LoRA adapter artifact."""

    id: str
    status: ModelStatus
    source: str | None = None  # external weights (base models): a path, hub id or 'embedded'
    weights: str | None = None  # artifact hash of a full safetensors model directory
    adapter: str | None = None  # artifact hash of a PEFT adapter directory on top of the weights
    parent_id: str | None = None
    cycle_id: str | None = None
    phase: str | None = None
    config_hash: str | None = None
    code_version: str | None = None
    created_at: float = 0.0
    datasets: list[str] = field(default_factory=list)  # content hashes of the datasets trained on
    # adapters beneath `adapter`, oldest first, not yet merged into the weights (learn.lora.stack): each was trained
    # on the weights with the ones before it merged in, so loading merges them in that order
    stack: list[str] = field(default_factory=list)


@dataclass
class DatasetRecord:
    """A content-addressed dataset. What it is and which cycle made it are fields, so that nothing has to parse
    `name`, which is a label for people."""

    hash: str
    name: str
    rows: int
    source: str
    created_at: float = 0.0
    _: KW_ONLY
    kind: DatasetKind
    cycle_id: str | None  # the cycle that first made these contents; None for an ingest or a red-team import
    strategy: str | None = None  # dream and quarantine: the Dream method that wrote them ("seal", ...)


@dataclass
class Cycle:
    id: str
    status: RunStatus
    base_model_id: str
    config_hash: str
    started_at: float
    finished_at: float | None = None
    outcome: str | None = None  # 'released' | 'rejected'
    result_model_id: str | None = None
    inputs: str | None = None  # artifact hash of the inputs frozen when the cycle started (cycle_inputs.py)


@dataclass
class PhaseRun:
    id: str
    cycle_id: str
    phase: str
    status: RunStatus
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float | None = None
    wall_s: float | None = None
    artifacts: list[str] = field(default_factory=list)  # artifact hashes the finished run's outputs refer to


@dataclass
class ReleaseEvent:
    id: int
    model_id: str
    action: str  # 'bootstrap' | 'release' | 'override' | 'rollback' | 'canary-promote'
    at: float
    reason: str | None = None  # why: a person's override, the choice a rollback made, a live alarm


@dataclass
class LiveCounts:
    """What a model's live traffic came to while it served, across server restarts (serving/canary.py): the
    counts the live rates are computed from, and latency."""

    model_id: str
    requests: int = 0  # answers given (a request with n choices counts once)
    errors: int = 0  # requests whose generation failed
    refusals: int = 0  # answers the string-match judge reads as a refusal
    thumbs_down: int = 0  # thumbs-down ratings of its answers
    latency_sum: float = 0.0  # seconds, over the answers
    latency_p95: float = 0.0  # seconds, over the latest answers
    updated_at: float = 0.0


# canary-promote: the canary became the release; canary-rollback: it was taken off; alarm-rollback: a new release
# was rolled back; alarm-clear: a new release was judged not worse
ServingAction = Literal["canary-promote", "canary-rollback", "alarm-rollback", "alarm-clear"]


@dataclass
class ServingDecision:
    """A decision the server took on live figures, with its reason and both arms' figures at that moment."""

    id: int  # 0 until stored
    action: ServingAction
    model_id: str  # the arm judged: the canary, or the new release
    against_id: str  # the arm it was compared with: the release, or the release the new one replaced
    at: float
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


# finished, skipped (nothing to do) and failed use up the slot's occurrence; busy (another process held the lock)
# and interrupted (the process died) do not, so the next `reverie rhythm run` tries that slot again
RhythmRunStatus = Literal["running", "finished", "skipped", "failed", "busy", "interrupted"]


@dataclass
class RhythmRun:
    """One slot of a rhythm run or skipped at one of its scheduled times (reverie/rhythms/)."""

    id: str
    rhythm: str
    slot: str
    scheduled_for: float  # the occurrence this run is for, on `clock`
    status: RhythmRunStatus
    started_at: float  # wall-clock time, whatever the clock
    clock: str = "real"  # 'real', or 'sim-<id>' for one accelerated `reverie rhythm serve` session
    finished_at: float | None = None
    detail: str = ""  # what the slot did, or why it was skipped or failed
    cycle_id: str | None = None  # the cycle the slot ran a part of
