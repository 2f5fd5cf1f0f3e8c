"""Robustness: repetition and distinct-n diversity of open-ended answers, and hallucination on questions the
model cannot know the answer to (it should say it does not know)."""

from __future__ import annotations

import json

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.files import read_builtin
from reverie.data.text import normalize
from reverie.engines.generation import generate
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.suites.base import ItemResult, fingerprint

ABSTENTION_MARKERS = (
    "i don't know", "i do not know", "not sure", "no information", "don't have information",
    "do not have information", "not aware", "no record", "doesn't exist", "does not exist", "fictional",
    "cannot find", "can't find", "unable to", "can't answer", "cannot answer", "can't predict", "cannot predict",
    "no way to know", "impossible to know", "not possible to", "don't have access", "do not have access",
    "not publicly", "no reliable", "i cannot", "i can't", "unknown", "there is no",
)


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def repetition(text: str) -> float:
    """Share of word 3-grams that repeat an earlier one in the same text."""
    grams = ngrams(normalize(text).split(), 3)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct(text: str, n: int = 2) -> float:
    grams = ngrams(normalize(text).split(), n)
    return len(set(grams)) / len(grams) if grams else 0.0


def abstains(text: str) -> bool:
    opening = text.lower().replace("\u2019", "'")
    return any(marker in opening for marker in ABSTENTION_MARKERS)


class RobustnessSuite:
    name = "robustness"

    def __init__(self, answer_tokens: int, batch_size: int):
        text = read_builtin("demo/robustness.jsonl")
        self.items = [json.loads(line) for line in text.split("\n") if line.strip()]
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.items, self.answer_tokens)

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        prompts = [item["prompt"] for item in self.items]
        outputs = [o[0] for o in generate(model, tokenizer, [user_prompt_ids(tokenizer, p) for p in prompts],
                                          self.answer_tokens, self.batch_size, description="robustness")]
        results = []
        for index, (item, output) in enumerate(zip(self.items, outputs)):
            if item["kind"] == "open":
                scores = {"repetition": repetition(output), "distinct_2": distinct(output)}
            else:
                scores = {"abstention": float(abstains(output))}
            results.append(ItemResult(str(index), item["prompt"], output, scores, {"kind": item["kind"]}))
        return results
