"""Knowledge distillation for Compress: the student learns the teacher's next-token distributions on the answer
tokens of the cycle's training examples, by the forward KL (teacher || student).

TRL's DistillationTrainer (1.16) is not used: it is on-policy only. Every step it has the student generate the
completions from the dataset's "prompt" column and ignores any completion the dataset holds, so it cannot distil
on fixed prompt + completion rows without generation, nor on plain text rows. TRL's off-policy variant
(trl.experimental.gkd with lmbda=0) is experimental, takes chat "messages" only and tokenizes them with its own
collator. The loop below reuses Learn's tokenize, pack and collate, so it distils on exactly the tokens Learn
trained on, plain text rows included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.config import DistilSettings, TrainSettings
from reverie.data.knowledge import Example
from reverie.engines.training import (IGNORE, PackedRow, collate, one_per_row, pack, packed_forward, run_steps,
                                     tokenize)
from reverie.errors import ReverieError

MEASURE_ROWS = 8  # packed rows per forward pass when KL is only measured
DEFAULT_BLOCK_SIZE: int = TrainSettings.model_fields["block_size"].default  # the field declaration is the one default


@dataclass
class DistilReport:
    """What a distillation run did: the mean per-token KL (teacher || student) before and after, and each step's."""

    kl_before: float
    kl_after: float
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # each optimizer step's mean KL over its answer tokens


def _vocab_size(model: PreTrainedModel | PeftModel) -> int:
    return model.get_output_embeddings().weight.shape[0]


def check_vocabularies(student: PreTrainedModel | PeftModel, teacher: PreTrainedModel,
                       tokenizer: PreTrainedTokenizerBase) -> None:
    """KL compares two distributions token by token, so both models must score the same vocabulary, the tokenizer's."""
    student_vocab, teacher_vocab = _vocab_size(student), _vocab_size(teacher)
    if student_vocab != teacher_vocab:
        raise ReverieError(
            f"compress.distil.student: the student's vocabulary has {student_vocab} tokens and the teacher's "
            f"{teacher_vocab}; distillation needs a student with the teacher's tokenizer"
        )
    if len(tokenizer) > teacher_vocab:
        raise ReverieError(
            f"compress.distil.student: the tokenizer has {len(tokenizer)} tokens but the models score only "
            f"{teacher_vocab}; distillation needs a student with the teacher's tokenizer"
        )


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Float32 logits at the positions that predict an answer token: (answer tokens, vocabulary)."""
    device = _device(model)
    inputs = {"input_ids": batch["input_ids"].to(device), "position_ids": batch["position_ids"].to(device)}
    logits = packed_forward(model, inputs).logits[:, :-1]  # position i predicts token i + 1
    return logits[mask.to(device)].float()


def _kl_sum(student: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
            temperature: float) -> tuple[torch.Tensor, int]:
    """Summed forward KL (teacher || student) over the batch's answer tokens, and how many there were.

    There is no temperature-squared factor: the KL is the only loss, and AdamW's steps do not depend on its scale.
    """
    mask = batch["labels"][:, 1:] != IGNORE
    with torch.no_grad():
        teacher_logprobs = F.log_softmax(_answer_logits(teacher, batch, mask) / temperature, dim=-1)
    student_logprobs = F.log_softmax(_answer_logits(student, batch, mask) / temperature, dim=-1)
    teacher_logprobs = teacher_logprobs.to(student_logprobs.device)
    kl = F.kl_div(student_logprobs, teacher_logprobs, log_target=True, reduction="sum")
    return kl, int(mask.sum())


def _rows(tokenizer: PreTrainedTokenizerBase, examples: list[Example], block_size: int,
          packed: bool) -> list[PackedRow]:
    tokenized = [tokenize(tokenizer, e, block_size) for e in examples]
    usable = [t for t in tokenized if any(label != IGNORE for label in t.labels)]
    if not usable:
        raise ReverieError(
            f"compress.distil: no example has answer tokens within block_size={block_size}; raise "
            "compress.distil.train.block_size"
        )
    return pack(usable, block_size) if packed else one_per_row(usable)


def mean_kl(student: PreTrainedModel | PeftModel, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            examples: list[Example], temperature: float, block_size: int = DEFAULT_BLOCK_SIZE) -> float:
    """The mean per-token KL (teacher || student) over the examples' answer tokens (every token of a plain text
    row), at the given softmax temperature: how far the student is from the teacher, without training it.

    Both models are left in eval mode.
    """
    check_vocabularies(student, teacher, tokenizer)
    rows = _rows(tokenizer, examples, block_size, packed=True)
    student.eval()
    teacher.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), MEASURE_ROWS):
            kl, count = _kl_sum(student, teacher, collate(rows[i : i + MEASURE_ROWS], tokenizer.pad_token_id),
                                temperature)
            total += kl.item()
            tokens += count
    return total / tokens


def distil(
    student: PreTrainedModel | PeftModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    settings: DistilSettings,
    description: str = "distil",
) -> DistilReport:
    """Train the student's trainable parameters (only the adapter of a PeftModel, every weight of a plain model)
    to match the frozen teacher's next-token distributions on the first settings.rows examples.

    The schedule is Learn's: AdamW with linear warm-up and decay, rows packed and shuffled as settings.train says.
    """
    train = settings.train
    examples = examples[: settings.rows]
    kl_before = mean_kl(student, teacher, tokenizer, examples, settings.temperature, train.block_size)
    rows = _rows(tokenizer, examples, train.block_size, train.pack)
    start = time.perf_counter()

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        kl, tokens = _kl_sum(student, teacher, batch, settings.temperature)
        return kl / tokens

    losses = run_steps(student, rows, train, tokenizer.pad_token_id, description, loss_of, "kl {:.4f}")
    seconds = time.perf_counter() - start
    kl_after = mean_kl(student, teacher, tokenizer, examples, settings.temperature, train.block_size)
    return DistilReport(kl_before, kl_after, len(losses), seconds, losses)
