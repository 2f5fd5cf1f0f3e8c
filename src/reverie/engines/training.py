"""Supervised fine-tuning on packed sequences: whole examples packed into rows, no padding to a fixed length.

Each example restarts its position ids, which makes transformers build a block-diagonal causal mask, so
packed examples never attend to each other.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from reverie.config import TrainSettings
from reverie.data.knowledge import Example
from reverie.engines.prompts import user_prompt_ids
from reverie.errors import ReverieError
from reverie.progress import progress_bar

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
    """Chat examples are trained on the answer only; plain text on every token."""
    eos = [tokenizer.eos_token_id]
    completion = tokenizer(example.completion, add_special_tokens=False)["input_ids"] + eos
    if example.prompt is None:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = bos + completion
        labels = [IGNORE] + ids[1:]
    else:
        prompt = user_prompt_ids(tokenizer, example.prompt)
        ids = prompt + completion
        labels = [IGNORE] * len(prompt) + completion
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


def run_steps(model: torch.nn.Module, rows: list[PackedRow], settings: TrainSettings, pad_token_id: int,
              description: str, loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
              status: str) -> list[float]:
    """The optimizer loop every packed-row trainer shares (SFT, distillation): AdamW on the trainable parameters,
    linear warm-up and decay, rows shuffled per epoch, gradients clipped at 1. Returns each step's loss; the
    model is left in eval mode. `status` formats the latest loss for the progress bar."""
    total_steps = math.ceil(len(rows) / settings.rows_per_step) * settings.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    # Warm up over the first tenth; a run of fewer than ten steps starts at the full rate, since step 0 of a
    # warm-up is taken at a learning rate of zero.
    scheduler = get_linear_schedule_with_warmup(optimizer, total_steps // 10, total_steps)
    shuffle = random.Random(settings.seed)
    losses: list[float] = []
    model.train()
    with progress_bar(description, total_steps) as bar:
        for _ in range(settings.epochs):
            order = rows[:]
            shuffle.shuffle(order)
            for i in range(0, len(order), settings.rows_per_step):
                loss = loss_of(collate(order[i : i + settings.rows_per_step], pad_token_id))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.advance(status=status.format(losses[-1]))
    model.eval()
    return losses


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    settings: TrainSettings,
    description: str = "train",
) -> dict[str, float]:
    """Train the model's trainable parameters (the adapter, when one is attached) and return loss figures.

    Examples longer than block_size are truncated and counted; one left with no answer tokens is skipped.
    """
    tokenized = [tokenize(tokenizer, e, settings.block_size) for e in examples]
    truncated = sum(len(t.input_ids) == settings.block_size for t in tokenized)
    usable = [t for t in tokenized if any(label != IGNORE for label in t.labels)]
    if not usable:
        raise ReverieError(f"no example has answer tokens within block_size={settings.block_size}; raise it")
    rows = pack(usable, settings.block_size) if settings.pack else one_per_row(usable)
    steps_per_epoch = math.ceil(len(rows) / settings.rows_per_step)
    tokens = sum(sum(label != IGNORE for label in row.labels) for row in rows) * settings.epochs
    start = time.perf_counter()
    losses = run_steps(model, rows, settings, tokenizer.pad_token_id, description,
                       lambda batch: packed_forward(model, batch).loss, "loss {:.3f}")
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
