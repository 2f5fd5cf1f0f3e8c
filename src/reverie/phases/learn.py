"""Learn: SFT of an adapter (learn.mode lora) or of every weight (full) on the knowledge drop (documents plus
training questions) and, when learn.pool_records is set, records drawn from the data pool by the configured
bucket mix, plus replay of earlier Gate failures (capped at learn.replay_share); on packed sequences. Continued
pretraining (pretrain) trains every weight on the documents' text and the pool's text records
(engines/pretraining.py). In this process, or on several data-parallel ranks (learn.processes or
learn.accelerate_config): then the cycle writes a training job (engines/train_job.py), launches it under torchrun
or accelerate, and stores what its main rank wrote. The job folder is named after the cycle, so a resumed cycle
relaunches the same job and continues from its last checkpoint (learn.checkpoint_every)."""

from __future__ import annotations

import shutil
from pathlib import Path

from peft import PeftModel

from reverie.data.datasets import save_dataset
from reverie.data.feedback import save_feedback_replay
from reverie.data.knowledge import Example, learn_examples
from reverie.data.pool import draw_for_learn
from reverie.data.replay import draw_replay
from reverie.engines.models import load_pretrained, load_tokenizer, load_version, store_adapter, weights_dir
from reverie.engines.pretraining import pretraining_corpus
from reverie.engines.train_job import TrainJob, launch_job, write_job
from reverie.engines.training import Checkpointing, train_sft
from reverie.errors import ReverieError
from reverie.phases.base import PhaseContext, PhaseResult
from reverie.phases.outputs import LearnOutput
from reverie.phases.strategies.base import attach_training_adapter, stack_beneath, store_like
from reverie.registry import ModelRecord
from reverie.workspace import Workspace


class Learn:
    name = "learn"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        config = ctx.workspace.config
        parent = ctx.candidate()
        knowledge, seed = ctx.inputs.knowledge, ctx.inputs.draw_seed
        draw = draw_for_learn(ctx.workspace, seed, ctx.inputs.pool)
        corpus = None
        if config.learn.mode == "pretrain":  # the documents' text, then the pool's text: every token trained on
            tokenizer = load_tokenizer(weights_dir(ctx.workspace, parent), config.model)
            corpus = pretraining_corpus(ctx.workspace, ctx.inputs.pool, tokenizer, config.learn.train.block_size)
            examples = [e for e in learn_examples(knowledge) if e.prompt is None] + corpus.examples + draw.examples
        else:
            examples = learn_examples(knowledge) + draw.examples
        feedback, corrections = save_feedback_replay(ctx.workspace, ctx.cycle.id, ctx.inputs.feedback)
        fresh = (feedback, corrections) if feedback else None
        replay, replayed_from = draw_replay(ctx.workspace, len(examples), seed, fresh)
        examples += replay
        source = config.data.knowledge + (" + data pool" if draw.examples else "") + (" + replay" if replay else "")
        dataset = save_dataset(ctx.workspace, f"{knowledge.name}/learn", source, examples, kind="learn",
                               cycle_id=ctx.cycle.id)

        full = config.learn.mode != "lora"
        if config.learn.processes > 1 or config.learn.accelerate_config:
            metrics, adapter, weights = train_in_job(ctx, parent, examples, full, config.learn.stack_adapters)
        else:
            metrics, adapter, weights = train_here(ctx, parent, examples, full, dataset.hash)
        if corpus is not None:
            metrics |= {"pretrain_tokens": float(corpus.tokens), "pretrain_records": float(corpus.records),
                        "pretrain_contaminated": float(corpus.contaminated)}
        metrics |= {f"pool_drawn_{b.bucket}": float(b.drawn) for b in draw.buckets}
        metrics |= {f"pool_repeated_{b.bucket}": float(b.repeated) for b in draw.buckets if b.repeated}
        if draw.contaminated:
            metrics["pool_contaminated"] = float(draw.contaminated)
        metrics |= {"replay_examples": float(len(replay)), "replay_share": len(replay) / len(examples)}

        # new feedback joins the lineage even when the replay cap left its examples out of this draw
        datasets = sorted({*parent.datasets, dataset.hash, *draw.datasets, *replayed_from,
                           *([feedback.hash] if feedback else []), *(corpus.datasets if corpus else [])})
        if full:
            model = ctx.new_model(parent, self.name, weights=weights, adapter=None, source=None, datasets=datasets)
        else:
            model = ctx.new_model(parent, self.name, adapter=adapter, stack=stack_beneath(ctx, parent),
                                  datasets=datasets)
        return PhaseResult(
            LearnOutput(model=model.id, dataset=dataset.hash, adapter=adapter, weights=weights,
                        feedback=feedback.hash if feedback else None),
            metrics=metrics | {"feedback_corrections": float(len(corrections))},
            new_models=[model],
            new_datasets=[dataset] + ([feedback] if feedback else []),
        )


def train_here(ctx: PhaseContext, parent: ModelRecord, examples: list[Example], full: bool,
               dataset: str) -> tuple[dict[str, float], str | None, str | None]:
    """Train in the cycle's own process; returns the metrics and the stored adapter or weights hash. With
    learn.checkpoint_every, a checkpoint named after the cycle lets a killed cycle continue mid-epoch; it belongs
    to this Learn dataset (`dataset`), so a checkpoint of other examples is refused, not resumed."""
    ws, config = ctx.workspace, ctx.workspace.config
    checkpointing = None
    if config.learn.checkpoint_every:
        ws.cache_dir.mkdir(parents=True, exist_ok=True)
        checkpointing = Checkpointing(ws.cache_dir / f"learn-{ctx.cycle.id}.pt", config.learn.checkpoint_every,
                                      f"{dataset}-{config.learn.mode}")
    loaded = load_version(ws, parent, trainable_adapter=True)
    if full:  # every weight, the parent's adapters merged in first
        if isinstance(loaded.model, PeftModel):
            loaded.model = loaded.model.merge_and_unload()
        loaded.model.requires_grad_(True)
    else:  # a parent that carries an adapter keeps training it (or, learn.stack_adapters, stacks a new one)
        attach_training_adapter(ctx, loaded, parent, config.learn.train.seed)
    metrics = train_sft(loaded.model, loaded.tokenizer, examples, config.learn.train,
                        f"learn: {config.learn.mode}", checkpointing=checkpointing)
    stored = store_like(ws, parent, loaded.model, loaded.tokenizer) if full else store_adapter(ws, loaded.model)
    if checkpointing:
        checkpointing.path.unlink(missing_ok=True)
    return (metrics, None, stored) if full else (metrics, stored, None)


def job_dir(ctx: PhaseContext) -> Path:
    """A launched Learn's job folder, named after the cycle: a resumed cycle relaunches the same job."""
    return ctx.workspace.cache_dir / f"learn-job-{ctx.cycle.id}"


def accelerate_config(ws: Workspace) -> Path | None:
    """learn.accelerate_config as a path (checked before a cycle opens, by cycle.check_inputs)."""
    name = ws.config.learn.accelerate_config
    if name is None:
        return None
    path = (ws.root / Path(name).expanduser()).resolve()
    if not path.is_file():
        raise ReverieError(f"learn.accelerate_config: {path} is not a file (an accelerate config; see "
                           "examples/accelerate/)")
    return path


def train_in_job(ctx: PhaseContext, parent: ModelRecord, examples: list[Example], full: bool,
                 stack: bool) -> tuple[dict[str, float], str | None, str | None]:
    """Train `parent` as a launched job; returns the job's metrics and the stored adapter or weights hash."""
    ws, config = ctx.workspace, ctx.workspace.config
    folder = job_dir(ctx)
    start, adapter = starting_point(ctx, parent, full, stack, folder)
    job = TrainJob(model_dir=start, dtype=config.model.dtype, trust_remote_code=config.model.trust_remote_code,
                   mode="full" if full else "lora", lora=config.learn.lora, adapter=adapter,
                   train=config.learn.train, output=folder / "output", checkpoint_every=config.learn.checkpoint_every,
                   description=f"learn: {'full' if full else 'LoRA'} SFT on {config.learn.processes} rank(s)")
    write_job(folder, job, examples)
    metrics = launch_job(folder, config.learn.processes, accelerate_config(ws))
    loaded = load_pretrained(job.output if full else start, config.model)
    if full:
        weights, adapter_hash = store_like(ws, parent, loaded.model, loaded.tokenizer), None
    else:
        weights, adapter_hash = None, store_adapter(ws, PeftModel.from_pretrained(loaded.model, job.output))
    shutil.rmtree(folder, ignore_errors=True)
    return metrics, adapter_hash, weights


def starting_point(ctx: PhaseContext, parent: ModelRecord, full: bool, stack: bool,
                   folder: Path) -> tuple[Path, Path | None]:
    """The weights the ranks load and the adapter they keep training, if any: the parent's own files when they
    serve as they are, else its stack (and, for full or a stacked fresh adapter, its adapter) merged once into
    the job folder."""
    ws = ctx.workspace
    keeps_adapter = parent.adapter is not None and not full and not stack
    if not parent.stack and (parent.adapter is None or keeps_adapter):
        adapter = ws.artifacts.path(parent.adapter) if keeps_adapter and parent.adapter else None
        return weights_dir(ws, parent), adapter
    start = folder / "start"
    if not (start / "config.json").is_file():
        loaded = load_version(ws, parent)
        model = loaded.model
        if isinstance(model, PeftModel) and not keeps_adapter:
            model = model.merge_and_unload()
        elif isinstance(model, PeftModel):
            model = model.unload()  # the stack merged in; the adapter stays the job's to train
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / "start.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        loaded.tokenizer.save_pretrained(staging)
        staging.rename(start)
    return start, ws.artifacts.path(parent.adapter) if keeps_adapter and parent.adapter else None
