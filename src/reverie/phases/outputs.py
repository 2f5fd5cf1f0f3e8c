"""What each phase hands over: one typed model per phase output, stored as JSON in the registry and validated
when read back. The cycle, the CLI, the dashboard, the model card and an override read these fields, never
string keys; every field that holds an artifact hash is marked `Artifact`, and `artifacts()` walks the marks
(garbage collection keeps what it returns). Torch-free, so that reporting can read a registry cheaply."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from reverie.errors import ReverieError
from reverie.registry import PhaseRun, RegistryStore


class _ArtifactMark:
    """Marks a field whose value is an artifact hash (or a list of them)."""


Artifact = Annotated[str, _ArtifactMark()]


def _marked(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return any(isinstance(m, _ArtifactMark) for m in annotation.__metadata__)
    return any(_marked(arg) for arg in get_args(annotation))


class Handover(BaseModel):
    """A typed record a phase writes: frozen, strict, and able to list the artifacts it refers to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def artifacts(self) -> list[str]:
        found: list[str] = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if any(isinstance(m, _ArtifactMark) for m in field.metadata) or _marked(field.annotation):
                found += [value] if isinstance(value, str) else list(value or ())
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Handover):
                    found += item.artifacts()
        return sorted(set(found))


class PhaseOutput(Handover):
    model: str  # the newest model version after the phase: a new one, or the one it started from

    @model_validator(mode="before")
    @classmethod
    def _untyped_record(cls, data: Any) -> Any:
        """Outputs recorded before they were typed listed their artifacts under 'artifacts' (the registry moved
        that list to its own column, so garbage collection keeps them) and had a shape of their own per phase."""
        if isinstance(data, dict):
            data = dict(data)
            return cls._upgrade(data, data.pop("artifacts", []))
        return data

    @classmethod
    def _upgrade(cls, data: dict[str, Any], artifacts: list[str]) -> dict[str, Any]:
        """The typed shape of an untyped record (`data`, without its artifacts list); a typed one is unchanged."""
        return data


class LearnOutput(PhaseOutput):
    dataset: Artifact  # the examples Learn trained on
    adapter: Artifact | None = None  # learn.mode lora: the adapter it trained
    weights: Artifact | None = None  # learn.mode full or pretrain: the weights it trained
    feedback: Artifact | None = None  # this cycle's feedback replay dataset, when the inbox held any

    @classmethod
    def _upgrade(cls, data: dict[str, Any], artifacts: list[str]) -> dict[str, Any]:
        if "adapter" not in data and artifacts:  # untyped: [adapter, dataset] + [feedback]
            data |= {"adapter": artifacts[0], "feedback": artifacts[2] if len(artifacts) > 2 else None}
        return data


class Variant(BaseModel):
    """One version a Compress strategy measured, placed on the quality-versus-cost front with why it was kept or
    not. Quality and cost are measured on the same probe for every variant (engines/front.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str  # e.g. "reference", "merged", "q8_0", "wanda-0.5", "2:4", "drop-1-layers", "distilled"
    accuracy: float  # closed-book accuracy on the probe questions (the training questions)
    seconds: float  # seconds per decoded token at batch 1: the cost axis the front is drawn on
    kept: bool
    strategy: str = ""
    format: str = "safetensors"  # how the variant is stored and run: safetensors (transformers) or gguf-<type>
    quality: dict[str, float] = {}  # accuracy, perplexity, distinct_2, reasoning_accuracy
    cost: dict[str, float] = {}  # tokens_per_s_b<n>, seconds_per_token, memory_mb, disk_bytes, joules_per_token
    energy: str = ""  # "rapl" (measured) or "estimate" (power_watts x seconds)
    reason: str = ""  # why it was kept or not (the policy's words)
    model: str | None = None  # the registered model, when kept


class StrategyOutcome(Handover):
    """What one Compress or Dream strategy did: kept (a new model) or not, why, and what it wrote."""

    strategy: str
    kept: bool
    reason: str
    model: str | None = None  # the model it made, when kept
    weights: Artifact | None = None
    adapter: Artifact | None = None
    datasets: list[Artifact] = []  # what it wrote: training data, quarantined rows
    variants: list[Variant] = []
    steps: Artifact | None = None  # preference training: every logged step (reward, KL, margins, lengths)
    reward_model: str | None = None  # grpo: the reward model the policy was optimised against


class _StrategiesOutput(PhaseOutput):
    strategies: list[StrategyOutcome] = []
    reason: str | None = None  # why the phase ran no strategy

    def kept(self) -> list[StrategyOutcome]:
        return [s for s in self.strategies if s.kept]


class CompressOutput(_StrategiesOutput):
    @classmethod
    def _upgrade(cls, data: dict[str, Any], artifacts: list[str]) -> dict[str, Any]:
        if "merged" in data:  # untyped: {merged, reason, variants}, before strategies existed
            merged, reason, variants = data.pop("merged"), data.pop("reason", None), data.pop("variants", [])
            if variants or merged:
                data["strategies"] = [{"strategy": "merge", "kept": bool(merged), "reason": reason or "merged",
                                       "model": data["model"] if merged else None,
                                       "weights": next(iter(artifacts), None), "variants": variants}]
            else:
                data["reason"] = reason
        return data

    def variants(self) -> list[Variant]:
        return [v for s in self.strategies for v in s.variants]


class DreamOutput(_StrategiesOutput):
    @classmethod
    def _upgrade(cls, data: dict[str, Any], artifacts: list[str]) -> dict[str, Any]:
        data.pop("dataset", None)  # untyped: {reason, dataset}; which method wrote it was not recorded
        return data


class GateVerdict(PhaseOutput):
    verdict: Literal["release", "reject"]
    reasons: list[str]
    notes: list[str] = []
    overridable: bool = True  # False when a red line was crossed
    reference: str  # the release the candidate was compared with
    candidate_scores: dict[str, float]
    reference_scores: dict[str, float]
    recalled_memory: list[str] = []  # memory documents the candidate answered closed-book
    replay: Artifact | None = None  # the material behind the questions the candidate got wrong

    @classmethod
    def _upgrade(cls, data: dict[str, Any], artifacts: list[str]) -> dict[str, Any]:
        if artifacts and "replay" not in data:  # untyped: the replay dataset was its one artifact
            data["replay"] = artifacts[0]
        return data

    @property
    def released(self) -> bool:
        return self.verdict == "release"


Output = TypeVar("Output", bound="PhaseOutput")
OUTPUT_TYPES: dict[str, type[PhaseOutput]] = {
    "learn": LearnOutput, "compress": CompressOutput, "dream": DreamOutput, "gate": GateVerdict,
}


def read_output(run: PhaseRun) -> PhaseOutput:
    """A finished phase run's output as its typed model; a record that does not validate is named."""
    kind = OUTPUT_TYPES.get(run.phase)
    if kind is None:
        raise ReverieError(f"phase run {run.id}: unknown phase {run.phase!r} (known: {', '.join(OUTPUT_TYPES)})")
    return read_as(run, kind)


def read_as(run: PhaseRun, kind: type[Output]) -> Output:
    """A finished phase run's output as `kind`, the model of its phase."""
    if OUTPUT_TYPES.get(run.phase) is not kind:
        raise ReverieError(f"phase run {run.id} is a {run.phase} run, not one that outputs a {kind.__name__}")
    try:
        return kind.model_validate(run.outputs)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}" for e in exc.errors())
        raise ReverieError(f"phase run {run.id} ({run.phase} of cycle {run.cycle_id}) has an output this version "
                           f"cannot read: {problems}") from None


def gate_verdicts(runs: list[PhaseRun]) -> list[GateVerdict]:
    """The verdicts of the finished Gate runs among `runs`."""
    return [read_as(run, GateVerdict) for run in runs if run.phase == "gate" and run.status == "finished"]


def gate_scores(registry: RegistryStore) -> dict[str, dict[str, float]]:
    """The Gate's scores of every model it measured: its scores as the candidate when a Gate judged it, else those
    of the first Gate that compared a candidate against it (a base model is only ever the reference)."""
    scores: dict[str, dict[str, float]] = {}
    for cycle in registry.list_cycles():
        for verdict in gate_verdicts(registry.phase_runs(cycle.id)):
            scores[verdict.model] = verdict.candidate_scores
            scores.setdefault(verdict.reference, verdict.reference_scores)
    return scores
