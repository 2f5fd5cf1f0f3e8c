"""Merging LoRA adapters into the weights, kept only when an A/B check on the probe says nothing changed: one
adapter (merge_with_ab_check), or a stack of them folded in batch by batch (stacked_model, probe_outputs,
ab_check)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.engines.evaluation import closed_book_qa
from reverie.engines.prompts import user_prompt_ids


@dataclass
class ProbeOutputs:
    """What the A/B check compares: the logits on each probe question and closed-book accuracy on the probe."""

    logits: list[torch.Tensor]
    accuracy: float


@dataclass
class ABCheck:
    max_logit_diff: float
    before_accuracy: float
    after_accuracy: float
    passed: bool


@dataclass
class MergeCheck:
    merged: PreTrainedModel | None  # None when the check failed (the adapter model is restored)
    max_logit_diff: float
    adapter_accuracy: float
    merged_accuracy: float


@torch.inference_mode()
def probe_outputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, probe: list[tuple[str, str]],
                  max_new_tokens: int, batch_size: int) -> ProbeOutputs:
    logits = [model(input_ids=torch.tensor([user_prompt_ids(tokenizer, q)], device=model.device)).logits.float().cpu()
              for q, _ in probe]
    scores, _ = closed_book_qa(model, tokenizer, probe, max_new_tokens, batch_size)
    return ProbeOutputs(logits, scores["accuracy"])


def ab_check(before: ProbeOutputs, after: ProbeOutputs, max_logit_diff: float) -> ABCheck:
    """Passed when no logit moved by more than max_logit_diff and closed-book accuracy did not drop."""
    diff = max(((a - b).abs().max().item() for a, b in zip(before.logits, after.logits)), default=0.0)
    return ABCheck(diff, before.accuracy, after.accuracy,
                   diff <= max_logit_diff and after.accuracy >= before.accuracy)


def merge_with_ab_check(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    probe: list[tuple[str, str]],
    max_logit_diff: float,
    max_new_tokens: int,
    batch_size: int,
) -> MergeCheck:
    """Merge, then compare the merged model with the adapter model on the probe questions.

    On failure the adapter is unmerged, so the caller still holds the adapter model.
    """
    before = probe_outputs(model, tokenizer, probe, max_new_tokens, batch_size)
    model.merge_adapter()  # while merged, the LoRA layers run only their (updated) base weights
    after = probe_outputs(model, tokenizer, probe, max_new_tokens, batch_size)
    check = ab_check(before, after, max_logit_diff)
    if not check.passed:
        model.unmerge_adapter()
        return MergeCheck(None, check.max_logit_diff, check.before_accuracy, check.after_accuracy)
    return MergeCheck(model.unload(), check.max_logit_diff, check.before_accuracy, check.after_accuracy)


def stacked_model(base: PreTrainedModel, fold: list[Path], active: list[Path]) -> PreTrainedModel | PeftModel:
    """`base` with the adapters in `fold` merged into its weights and those in `active` run unmerged, all at once.

    LoRA adds a delta to each targeted linear layer, so an adapter trained on the weights with the ones before it
    merged computes the same function when every adapter of the stack runs unmerged: the reference a batched
    merge is checked against. `base` is changed in place."""
    model: PreTrainedModel | PeftModel = base
    for adapters, merge in ((fold, True), (active, False)):
        if not adapters:
            continue
        names = [f"stacked-{i}" for i in range(len(adapters))]
        peft = PeftModel.from_pretrained(model, adapters[0], adapter_name=names[0])
        for name, path in zip(names[1:], adapters[1:]):
            peft.load_adapter(path, adapter_name=name)
        if merge:
            model = peft.merge_and_unload(adapter_names=names)
        else:
            peft.base_model.set_adapter(names)  # every adapter of the stack active together
            model = peft
    model.eval()
    return model
