"""Long context: a fact hidden at a known depth inside numbered passages that fill the input; the answer
must state it (recall) and cite the passage it was in (citation)."""

from __future__ import annotations

import json
import re

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.files import read_builtin
from reverie.data.text import contains_phrase
from reverie.engines.generation import generate
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.suites.base import ItemResult, fingerprint

PASSAGE_WORDS = 80
INSTRUCTION = ("Answer the question using the passages above, and cite the number of the passage you used in "
               "brackets, like [3].\nQuestion: {question}")


def load_needles() -> list[dict]:
    text = read_builtin("demo/needles.jsonl")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def filler_passages(texts: list[str]) -> list[str]:
    """The filler cut into passages of PASSAGE_WORDS words."""
    words = " ".join(texts).split()
    return [" ".join(words[i : i + PASSAGE_WORDS]) for i in range(0, len(words), PASSAGE_WORDS)]


class LongContextSuite:
    name = "long_context"

    def __init__(self, filler: list[str], context_tokens: int, answer_tokens: int, batch_size: int):
        self.needles = load_needles()
        self.passages = filler_passages(filler)
        self.context_tokens = context_tokens
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.needles, self.passages, self.context_tokens, self.answer_tokens)

    def _document(self, tokenizer: PreTrainedTokenizerBase, index: int) -> tuple[str, int]:
        """Numbered passages up to the token budget, with the index-th fact at a depth that moves through the
        input from item to item; returns the text and the fact's passage number."""
        chosen, used = [], 0
        while used < self.context_tokens:
            passage = self.passages[len(chosen) % len(self.passages)]
            used += len(tokenizer(passage, add_special_tokens=False)["input_ids"]) + 4
            chosen.append(passage)
        depth = (index + 0.5) / len(self.needles)
        position = min(len(chosen) - 1, int(depth * len(chosen)))
        chosen[position] = f"{chosen[position]} {self.needles[index]['fact']}"
        return "\n".join(f"[{n}] {p}" for n, p in enumerate(chosen, start=1)), position + 1

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        documents = [self._document(tokenizer, i) for i in range(len(self.needles))]
        prompts = [f"{text}\n\n" + INSTRUCTION.format(question=needle["question"])
                   for (text, _), needle in zip(documents, self.needles)]
        outputs = [o[0] for o in generate(model, tokenizer, [user_prompt_ids(tokenizer, p) for p in prompts],
                                          self.answer_tokens, self.batch_size, description="long context")]
        results = []
        for index, (needle, (_, passage), output) in enumerate(zip(self.needles, documents, outputs)):
            cited = re.findall(r"\[(\d+)\]", output)
            scores = {"recall": float(contains_phrase(output, needle["answer"])),
                      "citation": float(str(passage) in cited)}
            results.append(ItemResult(str(index), needle["question"], output, scores,
                                      {"answer": needle["answer"], "passage": passage}))
        return results
