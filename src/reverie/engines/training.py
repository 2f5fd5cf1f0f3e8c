"""Supervised fine-tuning on packed sequences: whole examples packed into rows, no padding to a fixed length.

Each example restarts its position ids, which makes transformers build a block-diagonal causal mask, so
packed examples never attend to each other.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from reverie.config import TrainSettings
from reverie.data.knowledge import Example
from reverie.engines.prompts import user_prompt_ids
from reverie.errors import ReverieError
from reverie.progress import progress_bar

if TYPE_CHECKING:
    from reverie.engines.distributed import Processes

IGNORE = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def tokenize(tokenizer: PreTrainedTokenizerBase, example: Example, max_len: int) -> Tokenized:
    """Chat examples are trained on the answer only (unless loss_on_prompt); plain text on every token."""
    eos = [tokenizer.eos_token_id]
    completion = tokenizer(example.completion, add_special_tokens=False)["input_ids"] + eos
    if example.prompt is None:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = bos + completion
        labels = [IGNORE] + ids[1:]
    else:
        prompt = user_prompt_ids(tokenizer, example.prompt)
        ids = prompt + completion
        labels = [IGNORE] + ids[1:] if example.loss_on_prompt else [IGNORE] * len(prompt) + completion
    return Tokenized(ids[:max_len], labels[:max_len])


def one_per_row(examples: list[Tokenized]) -> list[PackedRow]:
    return [PackedRow(e.input_ids, e.labels, list(range(len(e.input_ids)))) for e in examples]


def pack(examples: list[Tokenized], block_size: int) -> list[PackedRow]:
    """First-fit-decreasing bin packing of whole examples into rows of at most block_size tokens."""
    rows: list[PackedRow] = []
    for example in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        size = len(example.input_ids)
        row = next((r for r in rows if len(r.input_ids) + size <= block_size), None)
        if row is None:
            row = PackedRow([], [], [])
            rows.append(row)
        row.input_ids += example.input_ids
        row.labels += example.labels
        row.position_ids += list(range(size))
    return rows


def collate(rows: list[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad rows to the longest in the batch; the padding is its own segment and carries no loss."""
    width = max(len(r.input_ids) for r in rows)
    ids, labels, positions = [], [], []
    for row in rows:
        gap = width - len(row.input_ids)
        ids.append(row.input_ids + [pad_id] * gap)
        labels.append(row.labels + [IGNORE] * gap)
        positions.append(row.position_ids + list(range(gap)))
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "position_ids": torch.tensor(positions),
    }


def packed_forward(model: PreTrainedModel, batch: dict[str, torch.Tensor]):
    """Forward a packed batch. No KV cache: with one, transformers would ignore the per-example positions."""
    return model(**batch, use_cache=False)


class LossModule(torch.nn.Module):
    """The model and its loss as one module, so that a data-parallel wrapper's forward runs around the whole loss,
    whatever the loss closes over (DDP syncs gradients only for passes through its own forward)."""

    def __init__(self, model: torch.nn.Module, loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss_of = loss_of
        if (no_split := getattr(model, "_no_split_modules", None)) is not None:
            self._no_split_modules = no_split  # FSDP's auto-wrap policy looks for the layer class here

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_of(batch)


@dataclass(frozen=True)
class Checkpointing:
    """Where run_steps keeps its resumable state (written by the main process every `every` steps) and which run
    it belongs to: a checkpoint with another `key` is refused rather than resumed."""

    path: Path
    every: int
    key: str

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"Checkpointing.every={self.every}: checkpoints are written every 1 or more steps")


@dataclass
class _Resumed:
    losses: list[float]
    optimizer: dict
    scheduler: dict


class _QuietBar:
    """The progress bar of a rank other than the main one: the main rank's bar speaks for the job."""

    def advance(self, steps: int = 1, status: str = "") -> None:
        pass


def _answer_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Positions that predict an answer token: what a packed batch's mean loss is averaged over."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def _save_checkpoint(checkpointing: Checkpointing, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, losses: list[float]) -> None:
    state = {
        "key": checkpointing.key,
        "params": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "losses": losses,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }
    staging = checkpointing.path.with_name(checkpointing.path.name + ".tmp")
    torch.save(state, staging)
    os.replace(staging, checkpointing.path)


def _load_checkpoint(checkpointing: Checkpointing, model: torch.nn.Module) -> _Resumed | None:
    """Put a checkpoint's trainable parameters and random state back; None when there is none yet."""
    path = checkpointing.path
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if state["key"] != checkpointing.key or state["params"].keys() != trainable.keys():
        raise ReverieError(f"{path} was written by a different training run (other settings, data, model or number "
                           "of processes); delete it to train from the start")
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(state["params"][name])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    return _Resumed(list(state["losses"]), state["optimizer"], state["scheduler"])


@contextmanager
def _recomputing(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """Gradient (activation) checkpointing for the loop's duration only: generation after training keeps its KV
    cache. transformers' default is non-reentrant, so a frozen base under a LoRA adapter needs no inputs that
    require grad."""
    if not on:
        yield
        return
    model.activation_checkpointing_enable()
    try:
        yield
    finally:
        model.activation_checkpointing_disable()


def run_steps(model: torch.nn.Module, rows: list[PackedRow], settings: TrainSettings, pad_token_id: int,
              description: str, loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
              status: str, *, processes: Processes | None = None, checkpointing: Checkpointing | None = None,
              on_step: Callable[[int, list[int], float], None] | None = None) -> list[float]:
    """The optimizer loop every packed-row trainer shares (SFT, distillation): AdamW on the trainable parameters,
    linear warm-up and decay, rows shuffled per epoch, gradients clipped at 1. Returns each step's loss; the
    model is left in eval mode. `status` formats the latest loss for the progress bar.

    With `processes` (reverie.engines.distributed.start) the loop runs data-parallel: a step takes
    rows_per_step x world_size rows of the one shuffled order (the same seed on every rank), each rank its own
    slice, and each rank's loss is weighted by its share of the step's answer tokens, so the averaged gradients
    and the reported loss are those of one process taking the whole step. With `checkpointing` the state is saved
    every so many steps and a rerun resumes from it. `on_step(step, row indices this rank trained, loss)` is
    called after every step.
    """
    world = processes.world_size if processes else 1
    rows_per_step = settings.rows_per_step * world
    total_steps = math.ceil(len(rows) / rows_per_step) * settings.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    # Warm up over the first tenth; a run of fewer than ten steps starts at the full rate, since step 0 of a
    # warm-up is taken at a learning rate of zero.
    scheduler = get_linear_schedule_with_warmup(optimizer, total_steps // 10, total_steps)
    if checkpointing and processes and processes.sharded:
        raise ReverieError("checkpoints are kept under DDP and in one process; under FSDP or DeepSpeed train "
                           "without them (checkpoint_every 0)")
    resumed = _load_checkpoint(checkpointing, model) if checkpointing else None

    if processes is None:
        device = next(iter(params)).device  # the model's: a model placed on a GPU gets its batches there

        def take_step(batch: list[int]) -> float:
            loss = loss_of({k: v.to(device) for k, v in collate([rows[i] for i in batch], pad_token_id).items()})
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()
    else:
        runner, optimizer = processes.prepare(LossModule(model, loss_of), optimizer, settings.rows_per_step)

        def take_step(batch: list[int]) -> float:
            mine = processes.shard(batch, settings.rows_per_step)
            # a rank left without rows by a short last step still runs it (every rank must), with weight 0
            part = collate([rows[i] for i in mine or batch[:1]], pad_token_id)
            tokens = _answer_tokens(part) if mine else 0
            total = processes.sum(tokens).item()
            loss = runner({k: v.to(processes.device) for k, v in part.items()})
            processes.backward(loss * (tokens * world / total))
            processes.clip_grad_norm(1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            return (processes.sum(loss.detach() * tokens) / total).item()

    if resumed is not None:
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.scheduler)
    losses = resumed.losses if resumed else []
    shuffle = random.Random(settings.seed)
    step = 0
    model.train()
    main = processes is None or processes.is_main
    with (progress_bar(description, total_steps) if main else nullcontext(_QuietBar()) as bar,
          _recomputing(model, settings.gradient_checkpointing)):
        bar.advance(len(losses))
        for _ in range(settings.epochs):
            order = list(range(len(rows)))
            shuffle.shuffle(order)  # the same permutation for every rank, and for a resumed run
            for i in range(0, len(order), rows_per_step):
                step += 1
                if step <= len(losses):
                    continue
                batch = order[i : i + rows_per_step]
                losses.append(take_step(batch))
                if checkpointing and step % checkpointing.every == 0 and step < total_steps and main:
                    _save_checkpoint(checkpointing, model, optimizer, scheduler, losses)
                if on_step:
                    on_step(step, processes.shard(batch, settings.rows_per_step) if processes else batch, losses[-1])
                bar.advance(status=status.format(losses[-1]))
    model.eval()
    return losses


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    settings: TrainSettings,
    description: str = "train",
    *,
    processes: Processes | None = None,
    checkpointing: Checkpointing | None = None,
    on_step: Callable[[int, list[int], float], None] | None = None,
) -> dict[str, float]:
    """Train the model's trainable parameters (the adapter, when one is attached) and return loss figures.

    Examples longer than block_size are truncated and counted; one left with no answer tokens is skipped. The
    keyword arguments run it data-parallel and resumable (run_steps); the figures are the whole job's.
    """
    tokenized = [tokenize(tokenizer, e, settings.block_size) for e in examples]
    truncated = sum(len(t.input_ids) == settings.block_size for t in tokenized)
    usable = [t for t in tokenized if any(label != IGNORE for label in t.labels)]
    if not usable:
        raise ReverieError(f"no example has answer tokens within block_size={settings.block_size}; raise it")
    rows = pack(usable, settings.block_size) if settings.pack else one_per_row(usable)
    steps_per_epoch = math.ceil(len(rows) / (settings.rows_per_step * (processes.world_size if processes else 1)))
    tokens = sum(sum(label != IGNORE for label in row.labels) for row in rows) * settings.epochs
    start = time.perf_counter()
    losses = run_steps(model, rows, settings, tokenizer.pad_token_id, description,
                       lambda batch: packed_forward(model, batch).loss, "loss {:.3f}",
                       processes=processes, checkpointing=checkpointing, on_step=on_step)
    total_steps = len(losses)
    elapsed = time.perf_counter() - start
    head = losses[: max(1, steps_per_epoch)]
    tail = losses[-max(1, steps_per_epoch) :]
    return {
        "train_loss_first_epoch": sum(head) / len(head),
        "train_loss_last_epoch": sum(tail) / len(tail),
        "train_steps": float(total_steps),
        "train_examples": float(len(usable)),
        "train_truncated": float(truncated),
        "train_skipped": float(len(tokenized) - len(usable)),
        "train_rows": float(len(rows)),
        "train_tokens_per_s": tokens / elapsed if elapsed else 0.0,
        "train_seconds": elapsed,
    }
