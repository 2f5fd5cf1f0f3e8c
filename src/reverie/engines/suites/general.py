"""General capability retention: two-way multiple choice (PIQA format) by log-likelihood, in batches.

The default check is large (about 2,600 items: enough paired items to see a 2-point drop), so scoring is made
cheap: rows are batched by length, so that little of a batch is padding, and the vocabulary projection and
log-softmax are computed only for the choice tokens (`logits_to_keep`), not for the whole context.
benchmarks/gate_general.py measures it against scoring.continuation_logprobs on the embedded model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.multiple_choice import ChoiceItem
from reverie.engines.suites.base import ItemResult, fingerprint
from reverie.progress import progress_bar


@torch.inference_mode()
def choice_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    rows: list[tuple[list[int], list[int]]], batch_size: int,
                    advance: Callable[[int], None] | None = None) -> list[float]:
    """log P(continuation | context) for each (context ids, continuation ids), the same figures as
    scoring.continuation_logprobs. Batches hold rows of similar length (left-padded); a model that ignores
    `logits_to_keep` (llama.cpp) returns every position, and the last ones are taken."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    out = [0.0] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        joined = [rows[i][0] + rows[i][1] for i in chunk]
        width = max(len(ids) for ids in joined)
        keep = max(len(rows[i][1]) for i in chunk) + 1  # the logits that predict the longest continuation
        ids = torch.tensor([[pad] * (width - len(row)) + row for row in joined], device=model.device)
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in joined], device=model.device)
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, -keep:-1]
        picked = torch.log_softmax(logits.float(), -1).gather(2, ids[:, -keep + 1 :, None])[..., 0]
        for row, index in zip(picked, chunk):
            out[index] = float(row[-len(rows[index][1]) :].sum())
        if advance is not None:
            advance(len(chunk))
    return out


class GeneralSuite:
    name = "general"

    def __init__(self, items: list[ChoiceItem], batch_size: int):
        self.items = items
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint([item.__dict__ for item in self.items])

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        rows = [(tokenizer(item.goal)["input_ids"],
                 tokenizer(" " + choice.strip(), add_special_tokens=False)["input_ids"])
                for item in self.items for choice in item.choices]
        with progress_bar("general (multiple choice)", len(rows)) as bar:
            scores = choice_logprobs(model, tokenizer, rows, self.batch_size * 2, bar.advance)
        results = []
        for offset, item in enumerate(self.items):
            pair = scores[2 * offset : 2 * offset + 2]
            chosen = pair.index(max(pair))
            results.append(ItemResult(str(offset), item.goal, item.choices[chosen],
                                      {"accuracy": float(chosen == item.label)}, {"label": item.label}))
        return results
