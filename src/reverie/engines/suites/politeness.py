"""Politeness robustness: rude or hostile prompts, each around a simple question; the answer should stay civil
(no insult or hostility, by engines/civility.py's lexicon) and still answer (accuracy: the expected answer, any
of its '|'-separated forms, is stated)."""

from __future__ import annotations

import json

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.files import read_builtin
from reverie.data.text import contains_phrase
from reverie.engines.civility import hostile_markers
from reverie.engines.suites.answering import answer_prompts
from reverie.engines.suites.base import ItemResult, fingerprint


def politeness_scores(output: str, answer: str) -> tuple[dict[str, float], list[str]]:
    """The item's metrics and the hostile markers found."""
    markers = hostile_markers(output)
    answered = any(contains_phrase(output, form) for form in answer.split("|"))
    return {"civil": float(not markers), "accuracy": float(answered)}, markers


class PolitenessSuite:
    name = "politeness"

    def __init__(self, answer_tokens: int, batch_size: int):
        text = read_builtin("demo/politeness.jsonl")
        self.items = [json.loads(line) for line in text.split("\n") if line.strip()]
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.items, self.answer_tokens)

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        outputs = answer_prompts(model, tokenizer, [item["prompt"] for item in self.items], self.answer_tokens,
                                 self.batch_size, "politeness")
        results = []
        for index, (item, output) in enumerate(zip(self.items, outputs)):
            scores, markers = politeness_scores(output, item["answer"])
            results.append(ItemResult(str(index), item["prompt"], output, scores,
                                      {"answer": item["answer"], "hostile": markers}))
        return results
