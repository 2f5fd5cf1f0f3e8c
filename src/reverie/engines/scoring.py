"""A model-based quality score for text a model wrote: its perplexity under a reference model (the current
candidate). Text the model itself finds implausible (garbled, off-distribution) scores high."""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.inference_mode()
def perplexities(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                 batch_size: int = 16) -> list[float]:
    """exp(mean negative log-likelihood per token) of each text, in right-padded batches."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        rows = [bos + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start : start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
        picked = logprobs.gather(2, ids[:, 1:, None])[..., 0] * mask[:, 1:]
        counts = mask[:, 1:].sum(dim=1).clamp(min=1)
        scores += [math.exp(-float(total) / int(n)) for total, n in zip(picked.sum(dim=1), counts)]
    return scores


@torch.inference_mode()
def continuation_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                          rows: list[tuple[list[int], list[int]]], batch_size: int = 16) -> list[float]:
    """log P(continuation | context) for each (context ids, continuation ids), in left-padded batches."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        joined = [context + continuation for context, continuation in chunk]
        width = max(len(ids) for ids in joined)
        ids = torch.tensor([[pad] * (width - len(row)) + row for row in joined])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in joined])
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        picked = logprobs.gather(2, ids[:, 1:, None])[..., 0]
        out += [float(row[-len(continuation):].sum()) for row, (_, continuation) in zip(picked, chunk)]
    return out
