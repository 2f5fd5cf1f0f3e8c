"""Merging a LoRA adapter into the weights, kept only when an A/B check says nothing changed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.engines.evaluation import closed_book_qa
from reverie.engines.prompts import user_prompt_ids


@dataclass
class MergeCheck:
    merged: PreTrainedModel | None  # None when the check failed (the adapter model is restored)
    max_logit_diff: float
    adapter_accuracy: float
    merged_accuracy: float


@torch.inference_mode()
def _logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[torch.Tensor]:
    return [model(input_ids=torch.tensor([user_prompt_ids(tokenizer, t)])).logits.float() for t in texts]


def merge_with_ab_check(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    probe: list[tuple[str, str]],
    max_logit_diff: float,
    max_new_tokens: int,
    batch_size: int,
) -> MergeCheck:
    """Merge, then compare the merged model with the adapter model on the probe questions.

    The merge passes when no logit moved by more than max_logit_diff and closed-book accuracy did not drop.
    On failure the adapter is unmerged, so the caller still holds the adapter model.
    """
    questions = [q for q, _ in probe]
    before_logits = _logits(model, tokenizer, questions)
    before, _ = closed_book_qa(model, tokenizer, probe, max_new_tokens, batch_size)
    model.merge_adapter()  # while merged, the LoRA layers run only their (updated) base weights
    after_logits = _logits(model, tokenizer, questions)
    after, _ = closed_book_qa(model, tokenizer, probe, max_new_tokens, batch_size)
    diff = max((a - b).abs().max().item() for a, b in zip(before_logits, after_logits)) if probe else 0.0
    passed = diff <= max_logit_diff and after["accuracy"] >= before["accuracy"]
    if not passed:
        model.unmerge_adapter()
        return MergeCheck(None, diff, before["accuracy"], after["accuracy"])
    return MergeCheck(model.unload(), diff, before["accuracy"], after["accuracy"])
