"""What the measured Compress strategies share: one probe for every variant, each variant measured by the same
code (engines/front.py), the keep policy (engines/keep_policy.py), and storing the one it kept.

Every variant, kept or not, goes on the front with the policy's reason, so the chart shows what was tried."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from peft import PeftModel

from reverie.data.datasets import load_examples
from reverie.data.knowledge import Example, learn_examples
from reverie.data.splits import knowledge_probe
from reverie.engines.front import FrontProbe, Measurement, measure, probe_texts, reasoning_items
from reverie.engines.gguf_export import gguf_file_type
from reverie.engines.keep_policy import choose
from reverie.engines.models import LoadedModel, artifact_bytes, gguf_weights, load_version, weights_dir
from reverie.phases.base import PhaseContext
from reverie.phases.outputs import LearnOutput, StrategyOutcome, Variant
from reverie.phases.strategies.base import StrategyResult
from reverie.registry import ModelRecord

REFERENCE = "reference"


@dataclass
class Proposal:
    """A variant a strategy made and measured, waiting for the policy. `store` saves its weights as an artifact
    and returns the hash; it runs only for the variant the policy keeps."""

    name: str
    format: str
    measurement: Measurement
    store: Callable[[], str]
    metrics: dict[str, float] = field(default_factory=dict)
    saves_nothing: bool = False  # a format that cannot save time (sparse weights stored densely), whatever is timed


class FrontMeter:
    """Measures model versions on the phase's one probe, each version once: a strategy's reference is the
    model the strategy before it kept, already measured."""

    def __init__(self, ctx: PhaseContext):
        self.ctx = ctx
        self._probe: FrontProbe | None = None
        self.measured: dict[str, Measurement] = {}  # model id -> its measurement
        self.placed: set[str] = set()  # model ids already on the front as a variant

    @classmethod
    def of(cls, ctx: PhaseContext) -> FrontMeter:
        return ctx.memo.setdefault("front", cls(ctx))

    def probe(self) -> FrontProbe:
        if self._probe is None:
            ws, knowledge = self.ctx.workspace, self.ctx.inputs.knowledge
            front = ws.config.compress.front
            self._probe = FrontProbe(
                questions=knowledge_probe(knowledge)[: front.questions],
                texts=probe_texts(front.perplexity_text, [d.text for d in knowledge.documents], ws.root),
                reasoning=reasoning_items(front.reasoning, ws.root, front.reasoning_limit,
                                          ws.config.eval.general_suite),
            )
        return self._probe

    def measure(self, loaded: LoadedModel, disk_bytes: int) -> Measurement:
        config = self.ctx.workspace.config
        return measure(loaded.model, loaded.tokenizer, self.probe(), config.compress.front,
                       config.eval.max_new_tokens, config.eval.batch_size, disk_bytes)

    def reference(self, record: ModelRecord) -> Measurement:
        """The measurement of a registered version, run as it would be served (a GGUF by llama.cpp)."""
        if record.id not in self.measured:
            loaded = load_version(self.ctx.workspace, record, inference=True)
            if isinstance(loaded.model, PeftModel):
                loaded.model = loaded.model.merge_and_unload()  # as the server runs it: one matmul per layer
            self.measured[record.id] = self.measure(loaded, model_bytes(self.ctx, record))
        return self.measured[record.id]


def training_examples(ctx: PhaseContext) -> list[Example]:
    """What this cycle's Learn trained on (the knowledge drop's examples when no Learn ran): the calibration and
    recovery data of the strategies that need some, never an evaluation item."""
    learn = ctx.handoff.get("learn")
    if isinstance(learn, LearnOutput):
        return load_examples(ctx.workspace, learn.dataset)
    return learn_examples(ctx.inputs.knowledge)


def loaded_float(ctx: PhaseContext, record: ModelRecord) -> LoadedModel:
    """A fresh float copy of a version for a strategy to change: its adapter merged in."""
    loaded = load_version(ctx.workspace, record)
    if isinstance(loaded.model, PeftModel):
        loaded.model = loaded.model.merge_and_unload()
    return loaded


def parameter_bytes(loaded: LoadedModel) -> int:
    """What a dense safetensors file of an in-memory variant holds: every parameter once, zeros included."""
    return sum(p.numel() * p.element_size() for p in loaded.model.parameters())


def model_bytes(ctx: PhaseContext, record: ModelRecord) -> int:
    """Bytes on disk of what serving this version needs: its weights (an external source's files) and adapter."""
    ws = ctx.workspace
    total = artifact_bytes(ws, record.adapter) if record.adapter else 0
    if record.weights:
        return total + artifact_bytes(ws, record.weights)
    source = weights_dir(ws, record)
    return total + sum(f.stat().st_size for f in source.glob("*.safetensors"))


def format_of(ctx: PhaseContext, record: ModelRecord) -> str:
    """How a version is stored and run: "safetensors" (transformers; "+adapter" with one) or "gguf-<type>"."""
    gguf = gguf_weights(ctx.workspace, record)
    if gguf is not None:
        return f"gguf-{gguf_file_type(gguf)}"
    return "safetensors+adapter" if record.adapter else "safetensors"


@contextmanager
def scratch_dir(ctx: PhaseContext) -> Iterator[Path]:
    """A folder for a strategy's intermediate files, inside the workspace cache, removed afterwards."""
    ctx.workspace.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.workspace.cache_dir, prefix="compress-") as folder:
        yield Path(folder)


def keep_by_policy(ctx: PhaseContext, strategy: str, candidate: ModelRecord, proposals: list[Proposal],
                   metrics: dict[str, float], no_variant_reason: str = "") -> StrategyResult:
    """Measure the candidate (the reference), let compress.keep choose among it and the proposals, store and
    register the chosen variant, and place every one on the front with the policy's reason."""
    meter = FrontMeter.of(ctx)
    if not proposals:
        return StrategyResult(StrategyOutcome(strategy=strategy, kept=False, reason=no_variant_reason), metrics)
    reference = meter.reference(candidate)
    decision = choose((REFERENCE, reference), [(p.name, p.measurement) for p in proposals],
                      ctx.workspace.config.compress.keep, frozenset(p.name for p in proposals if p.saves_nothing))
    kept = next((p for p in proposals if p.name == decision.kept), None)
    model: ModelRecord | None = None
    if kept is not None:
        weights = kept.store()
        model = ctx.new_model(candidate, "compress", weights=weights, adapter=None, source=None,
                              datasets=candidate.datasets)
        meter.measured[model.id] = kept.measurement
        meter.placed.add(model.id)
    variants = []
    if candidate.id not in meter.placed:
        meter.placed.add(candidate.id)
        variants.append(variant(REFERENCE, strategy, format_of(ctx, candidate), reference, kept is None,
                                decision.reasons[REFERENCE], candidate.id))
    variants += [variant(p.name, strategy, p.format, p.measurement, p is kept, decision.reasons[p.name],
                         model.id if p is kept and model else None) for p in proposals]
    for p in proposals:
        metrics |= {f"{p.name}.{key}": value for key, value in p.metrics.items()}
    reason = decision.reasons[decision.kept]
    outcome = StrategyOutcome(strategy=strategy, kept=model is not None, reason=reason,
                              model=model.id if model else None, weights=model.weights if model else None,
                              variants=variants)
    return StrategyResult(outcome, metrics, [model] if model else [])


def variant(name: str, strategy: str, fmt: str, measured: Measurement, kept: bool, reason: str,
            model: str | None) -> Variant:
    return Variant(name=name, strategy=strategy, format=fmt, accuracy=measured.quality["accuracy"],
                   seconds=measured.cost["seconds_per_token"], kept=kept, quality=measured.quality,
                   cost=measured.cost, energy=measured.energy, reason=reason, model=model)
