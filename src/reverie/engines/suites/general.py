"""General capability retention: two-way multiple choice (PIQA format) by log-likelihood, in batches."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.multiple_choice import ChoiceItem
from reverie.engines.scoring import continuation_logprobs
from reverie.engines.suites.base import ItemResult, fingerprint
from reverie.progress import progress_bar


class GeneralSuite:
    name = "general"

    def __init__(self, items: list[ChoiceItem], batch_size: int):
        self.items = items
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint([item.__dict__ for item in self.items])

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        results = []
        with progress_bar("general (multiple choice)", len(self.items)) as bar:
            for start in range(0, len(self.items), self.batch_size):
                chunk = self.items[start : start + self.batch_size]
                rows = [(tokenizer(item.goal)["input_ids"],
                         tokenizer(" " + choice.strip(), add_special_tokens=False)["input_ids"])
                        for item in chunk for choice in item.choices]
                scores = continuation_logprobs(model, tokenizer, rows, self.batch_size * 2)
                for offset, item in enumerate(chunk, start=start):
                    pair = scores[2 * (offset - start) : 2 * (offset - start) + 2]
                    chosen = pair.index(max(pair))
                    results.append(ItemResult(str(offset), item.goal, item.choices[chosen],
                                              {"accuracy": float(chosen == item.label)}, {"label": item.label}))
                bar.advance(len(chunk))
        return results
