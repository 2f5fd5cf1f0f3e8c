"""What every strategy shares, written once: the registries, the Dream tail (quarantine with reasons, train by
the strategy's own method, A/B check on the probe split), merge-or-keep-adapter, and the lineage of the model a
strategy makes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.config import QuantFormat
from reverie.data.datasets import save_dataset, save_rejected, save_rows
from reverie.data.jsonl import write_jsonl
from reverie.data.knowledge import Example
from reverie.data.preference import PAIRS_FILE, PreferencePair, load_pairs, preference_datasets
from reverie.data.preference_ingest import PairChecks, PairIndex, save_pairs, screen_pairs
from reverie.data.records import Rejected
from reverie.data.splits import knowledge_probe
from reverie.engines.evaluation import probe_accuracy
from reverie.engines.gguf_export import gguf_file_type, quantize_gguf, write_gguf
from reverie.engines.merging import MergeCheck, merge_with_ab_check
from reverie.engines.models import (LoadedModel, attach_lora, gguf_weights, load_pretrained, load_version,
                                    store_adapter, store_gguf, store_weights)
from reverie.engines.preference_training import RLPrompt
from reverie.engines.prompts import token_counter
from reverie.engines.scoring import probe_answer_loss
from reverie.engines.training import train_sft
from reverie.phases.base import PhaseContext, PhaseResult
from reverie.phases.outputs import CompressOutput, DreamOutput, StrategyOutcome
from reverie.registry import DatasetRecord, ModelRecord
from reverie.workspace import Workspace


@dataclass
class StrategyResult:
    """One strategy's typed outcome, its metrics, and the models and datasets the phase records for it."""

    outcome: StrategyOutcome
    metrics: dict[str, float] = field(default_factory=dict)
    new_models: list[ModelRecord] = field(default_factory=list)
    new_datasets: list[DatasetRecord] = field(default_factory=list)

    def model(self) -> ModelRecord | None:
        """The model the strategy made and kept, which the next strategy starts from."""
        return next((m for m in self.new_models if m.id == self.outcome.model), None)


class CompressStrategy(Protocol):
    name: str

    def run(self, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult: ...


@dataclass
class DreamData:
    """What a Dream strategy wrote: rows to train on (SFT examples, preference pairs or RL prompts, by the
    strategy's kind), and the items it quarantined with their reasons."""

    source: str  # what wrote the data, for the dataset record
    examples: list[Example]
    metrics: dict[str, float]
    quarantined: list[Rejected] = field(default_factory=list)
    pairs: list[PreferencePair] = field(default_factory=list)
    prompts: list[RLPrompt] = field(default_factory=list)
    found_pairs: list[PreferencePair] = field(default_factory=list)  # not trained on now: a preference dataset
    drawn_from: list[str] = field(default_factory=list)  # hashes of the datasets rows were drawn from (lineage)

    def size(self) -> int:
        return len(self.examples) + len(self.pairs) + len(self.prompts)

    def save(self, ctx: PhaseContext, strategy: str) -> DatasetRecord:
        """The training rows as a dataset of kind "dream", so that lineage points at exactly what was trained on."""
        ws, cycle = ctx.workspace, ctx.cycle.id
        label = f"{ctx.inputs.knowledge.name}/dream-{strategy}"
        if self.pairs:
            return save_rows(ws, label, self.source, PAIRS_FILE, self.pairs, kind="dream", cycle_id=cycle,
                             strategy=strategy)
        if self.prompts:
            return save_rows(ws, label, self.source, "prompts.jsonl", self.prompts, kind="dream", cycle_id=cycle,
                             strategy=strategy)
        return save_dataset(ws, label, self.source, self.examples, kind="dream", cycle_id=cycle, strategy=strategy)


@dataclass
class Trained:
    """What a strategy's training reports: metrics, every logged step, and the reward model it optimised against."""

    metrics: dict[str, float]
    steps: list[dict[str, float]] = field(default_factory=list)
    reward_model: str | None = None


class DreamStrategy(Protocol):
    name: str

    # `loaded` writes the data: the candidate as the server runs it (llama.cpp for a quantized one)
    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData: ...

    def train(self, ctx: PhaseContext, loaded: LoadedModel, candidate: ModelRecord, data: DreamData) -> Trained: ...


def prepare_policy(ctx: PhaseContext, loaded: LoadedModel, candidate: ModelRecord, full: bool, seed: int,
                   scratch: Path) -> None:
    """Make the candidate trainable for preference training. LoRA: as attach_training_adapter. Full: every
    parameter; an adapter is merged first and the result reloaded from `scratch`, since TRL builds a full model's
    reference from the folder the model was loaded from, and that must be the candidate."""
    config = ctx.workspace.config
    if full and candidate.adapter:
        shutil.rmtree(scratch, ignore_errors=True)
        loaded.model.merge_and_unload().save_pretrained(scratch, safe_serialization=True)
        loaded.tokenizer.save_pretrained(scratch)
        loaded.model = load_pretrained(scratch, config.model).model
    if full:
        loaded.model.requires_grad_(True)
    else:
        attach_training_adapter(ctx, loaded, candidate, seed)


def attach_training_adapter(ctx: PhaseContext, loaded: LoadedModel, record: ModelRecord, seed: int) -> None:
    """Give `loaded` (the record loaded with a trainable adapter) the adapter a phase trains: the record's own, or a
    fresh one on merged weights, or with learn.stack_adapters a fresh one above the record's (stack_beneath)."""
    if record.adapter and not ctx.workspace.config.learn.stack_adapters:
        return
    if record.adapter:
        loaded.model = loaded.model.merge_and_unload()  # the function the new adapter trains on; stored unmerged
    loaded.model = attach_lora(loaded.model, ctx.workspace.config.learn.lora, seed)


def stack_beneath(ctx: PhaseContext, record: ModelRecord) -> list[str]:
    """The stack of the version an adapter trained on `record` makes (attach_training_adapter)."""
    stacked = record.adapter and ctx.workspace.config.learn.stack_adapters
    return [*record.stack, record.adapter] if stacked else list(record.stack)


class SupervisedDream:
    """A Dream strategy that writes SFT examples: the candidate trains on them with its adapter (a fresh one on
    merged weights, or above its adapter with learn.stack_adapters)."""

    name: str

    def train(self, ctx: PhaseContext, loaded: LoadedModel, candidate: ModelRecord, data: DreamData) -> Trained:
        config = ctx.workspace.config
        attach_training_adapter(ctx, loaded, candidate, config.dream.train.seed)
        return Trained(train_sft(loaded.model, loaded.tokenizer, data.examples, config.dream.train,
                                 f"dream: SFT ({self.name})"))


COMPRESS: dict[str, CompressStrategy] = {}
DREAM: dict[str, DreamStrategy] = {}
S = TypeVar("S")


def register(table: dict[str, S], name: str) -> Callable[[type], type]:
    """Class decorator: one instance of the strategy, under `name` in `table`."""
    def add(cls: type) -> type:
        cls.name = name
        table[name] = cls()
        return cls
    return add


def run_in_turn(candidate: ModelRecord, names: list[str], run: Callable[[str, ModelRecord], StrategyResult],
                output: type[CompressOutput | DreamOutput]) -> PhaseResult:
    """The phase's result of running the named strategies in order, each on the model the one before it kept.
    Metrics are named `<strategy>.<metric>` when more than one strategy ran, so that none overwrites another."""
    results: list[StrategyResult] = []
    metrics: dict[str, float] = {}
    for name in names:
        result = run(name, candidate)
        candidate = result.model() or candidate
        results.append(result)
        metrics |= {(f"{name}.{key}" if len(names) > 1 else key): value for key, value in result.metrics.items()}
    return PhaseResult(output(model=candidate.id, strategies=[r.outcome for r in results]), metrics,
                       [m for r in results for m in r.new_models], [d for r in results for d in r.new_datasets])


@dataclass
class Kept:
    """A trained model stored as merged weights or as an adapter."""

    model: ModelRecord
    weights: str | None = None
    adapter: str | None = None
    check: MergeCheck | None = None


def merge_or_keep_adapter(ctx: PhaseContext, parent: ModelRecord, loaded: LoadedModel, phase: str,
                          datasets: list[str], merge: bool) -> Kept:
    """Merge the adapter into the weights when `merge` and the A/B check on the probe split passes; otherwise
    store the adapter as the new model."""
    config = ctx.workspace.config
    check = None
    if merge:
        check = merge_with_ab_check(loaded.model, loaded.tokenizer, knowledge_probe(ctx.inputs.knowledge),
                                    config.compress.max_logit_diff, config.eval.max_new_tokens,
                                    config.eval.batch_size)
        if check.merged is not None:
            weights = store_like(ctx.workspace, parent, check.merged, loaded.tokenizer)
            model = ctx.new_model(parent, phase, weights=weights, adapter=None, source=None, datasets=datasets)
            return Kept(model, weights=weights, check=check)
    adapter = store_adapter(ctx.workspace, loaded.model)
    return Kept(ctx.new_model(parent, phase, adapter=adapter, stack=stack_beneath(ctx, parent), datasets=datasets),
                adapter=adapter, check=check)


def store_like(ws: Workspace, parent: ModelRecord, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """Store merged weights the way the parent is stored: a quantized parent (compress.quantize kept it) gets a
    GGUF of the same type, so that what the Gate measures and the server runs stays quantized."""
    gguf = gguf_weights(ws, parent)
    kind = gguf_file_type(gguf) if gguf is not None else None
    if kind not in get_args(QuantFormat):
        return store_weights(ws, model, tokenizer)
    ws.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.cache_dir, prefix="requantize-") as folder:
        scratch = Path(folder)
        model.save_pretrained(scratch / "merged", safe_serialization=True)
        tokenizer.save_pretrained(scratch / "merged")
        full = write_gguf(scratch / "merged", scratch / "f32.gguf", dtype="f32")
        return store_gguf(ws, quantize_gguf(full, scratch / "model.gguf", kind), tokenizer)


def dream_with(strategy: DreamStrategy, ctx: PhaseContext, candidate: ModelRecord) -> StrategyResult:
    """Write the strategy's data, quarantine what failed its quality gate, train the candidate on the rest, and
    keep the result only when closed-book accuracy on the probe split fell by no more than dream.max_regression.

    The probe is what Learn taught, so this guards against Dream undoing Learn; it cannot see a loss once
    Learn has saturated those questions. The answer loss is recorded beside it but not judged."""
    ws, name = ctx.workspace, strategy.name
    settings, config = ws.config.dream, ws.config
    knowledge = ctx.inputs.knowledge
    loaded = load_version(ws, candidate, trainable_adapter=True)
    # a quantized candidate (or any, with model.runtime llama.cpp or vllm) writes its data through that runtime, as
    # the Gate and the server run it, and trains in torch
    served = gguf_weights(ws, candidate) is not None or config.model.runtime != "transformers"
    sampler = load_version(ws, candidate, inference=True) if served else loaded
    data = strategy.data(ctx, sampler)
    del sampler
    metrics = dict(data.metrics)
    datasets: list[DatasetRecord] = []
    if data.quarantined:
        datasets.append(save_rejected(ws, f"{knowledge.name}/dream-{name}-quarantine", data.quarantined,
                                      kind="quarantine", cycle_id=ctx.cycle.id, strategy=name))
    if data.found_pairs:  # screened like an ingest; the next cycles freeze it among their preference datasets
        datasets.append(save_found_pairs(ctx, loaded, data, name))

    def passed_through(reason: str, **extra: Any) -> StrategyResult:
        outcome = StrategyOutcome(strategy=name, kept=False, reason=reason, datasets=[d.hash for d in datasets],
                                  **extra)
        return StrategyResult(outcome, metrics, new_datasets=datasets)

    if not data.size():
        return passed_through("no synthetic example passed the quality gate")
    dataset = data.save(ctx, name)
    datasets.append(dataset)
    probe = knowledge_probe(knowledge)
    batch, tokens = config.eval.batch_size, config.eval.max_new_tokens
    before, loss_before = probe_accuracy(loaded, probe, tokens, batch), probe_answer_loss(loaded, probe, batch)
    trained = strategy.train(ctx, loaded, candidate, data)
    metrics |= trained.metrics
    extra: dict[str, Any] = {"reward_model": trained.reward_model}
    if trained.steps:
        extra["steps"] = save_steps(ws, trained.steps)
    after, loss_after = probe_accuracy(loaded, probe, tokens, batch), probe_answer_loss(loaded, probe, batch)
    metrics |= {"dream_probe_accuracy_before": before, "dream_probe_accuracy_after": after,
                "dream_probe_loss_before": loss_before, "dream_probe_loss_after": loss_after}
    if before - after > settings.max_regression + 1e-9:  # the tolerance: 0.8 - 0.1 is not 0.7 in floats
        return passed_through(f"A/B check: closed-book accuracy on the training questions fell from {before:.3f} "
                              f"to {after:.3f} (dream.max_regression {settings.max_regression:g}); the candidate "
                              "passes through", **extra)

    lineage = sorted({*candidate.datasets, dataset.hash, *data.drawn_from})
    if not isinstance(loaded.model, PeftModel):  # full fine-tuning: new weights, nothing to merge
        weights = store_like(ws, candidate, loaded.model, loaded.tokenizer)
        kept = Kept(ctx.new_model(candidate, "dream", weights=weights, adapter=None, source=None, datasets=lineage),
                    weights=weights)
    else:  # from merged weights: merge again if the A/B check allows; an adapter stays an adapter otherwise
        kept = merge_or_keep_adapter(ctx, candidate, loaded, "dream", lineage, merge=not candidate.adapter)
    if kept.check is not None:
        metrics["merge_max_logit_diff"] = kept.check.max_logit_diff
    outcome = StrategyOutcome(strategy=name, kept=True, reason=f"accuracy on the training questions {before:.3f} -> "
                              f"{after:.3f}", model=kept.model.id, weights=kept.weights, adapter=kept.adapter,
                              datasets=[d.hash for d in datasets], **extra)
    return StrategyResult(outcome, metrics, [kept.model], datasets)


def save_found_pairs(ctx: PhaseContext, loaded: LoadedModel, data: DreamData, strategy: str) -> DatasetRecord:
    """Pairs a strategy found on the way, through ingest's steps (dedup against every preference dataset), as a
    preference dataset of this cycle."""
    ws = ctx.workspace
    index = PairIndex.build((p for d in preference_datasets(ws) for p in load_pairs(ws, d)),
                            ws.config.data.near_duplicate_threshold)
    checks = PairChecks.of(ws, token_counter(loaded.tokenizer), min_tier=0)  # the model's own: nothing to distrust
    result = screen_pairs(data.found_pairs, index, checks)
    return save_pairs(ws, f"preference/{ctx.inputs.knowledge.name}-{strategy}-{ctx.cycle.id}", data.source, result,
                      checks, {"input": f"dream {strategy}, cycle {ctx.cycle.id}"}, cycle_id=ctx.cycle.id,
                      strategy=strategy)


def save_steps(ws: Workspace, steps: list[dict[str, float]]) -> str:
    """Every logged training step as an artifact (steps.jsonl) the strategy's outcome points to."""
    with ws.artifacts.stage() as staged:
        write_jsonl(staged.path / "steps.jsonl", steps)
    return staged.hash
