"""A model-based quality score for text a model wrote: its perplexity under a reference model (the current
candidate). Text the model itself finds implausible (garbled, off-distribution) scores high."""

from __future__ import annotations

import math
import sys

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.knowledge import Example
from reverie.engines.models import LoadedModel
from reverie.engines.training import IGNORE, tokenize


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
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
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
        ids = torch.tensor([[pad] * (width - len(row)) + row for row in joined], device=model.device)
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in joined], device=model.device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        picked = logprobs.gather(2, ids[:, 1:, None])[..., 0]
        out += [float(row[-len(continuation):].sum()) for row, (_, continuation) in zip(picked, chunk)]
    return out


def plausible_items(items: list[str], scorer: LoadedModel, limit: float,
                    batch_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Split items into (kept, [(dropped, reason)]) by their perplexity under `scorer`."""
    kept, dropped = [], []
    for item, score in zip(items, perplexities(scorer.model, scorer.tokenizer, items, batch_size)):
        if score <= limit:
            kept.append(item)
        else:
            dropped.append((item, f"perplexity {score:.1f} under the candidate is above dream.seal.max_perplexity "
                                  f"{limit:g}"))
    return kept, dropped


def probe_answer_loss(loaded: LoadedModel, probe: list[tuple[str, str]], batch_size: int) -> float:
    """Negative log-likelihood per answer token given the question: it still moves once accuracy is saturated."""
    rows = []
    for question, answer in probe:  # split where Learn's labels start: the same tokens it trained on
        encoded = tokenize(loaded.tokenizer, Example(prompt=question, completion=answer), max_len=sys.maxsize)
        start = encoded.labels.count(IGNORE)
        rows.append((encoded.input_ids[:start], encoded.input_ids[start:]))
    logprobs = continuation_logprobs(loaded.model, loaded.tokenizer, rows, batch_size)
    return -sum(logprobs) / max(1, sum(len(answer) for _, answer in rows))
