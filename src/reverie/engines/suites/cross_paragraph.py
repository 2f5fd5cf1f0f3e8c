"""Cross-paragraph consistency: two-hop questions whose answer needs two facts placed in two paragraphs far apart
in one long input (the founder of a prize, then where that founder was born); the filler is the held-out
knowledge documents, cut into numbered passages. Scored by whether the answer states the final fact (accuracy)
and names the entity that links the two (bridge: the first hop was found)."""

from __future__ import annotations

import json

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.files import read_builtin
from reverie.data.text import contains_phrase
from reverie.engines.suites.answering import answer_prompts
from reverie.engines.suites.base import ItemResult, fingerprint
from reverie.engines.suites.long_context import filler_passages

INSTRUCTION = "Answer the question using the passages above. Answer in one sentence.\nQuestion: {question}"
FIRST_DEPTH, GAP = 0.15, 0.6  # the first fact sits between 15% and 35% of the input, the second 60% further on


def load_two_hop() -> list[dict]:
    text = read_builtin("demo/cross_paragraph.jsonl")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def fact_positions(index: int, count: int, passages: int) -> tuple[int, int]:
    """Where item `index` of `count` puts its two facts among `passages` passages: far apart, moving with the
    item, and in the reading order of the hops for even items, reversed for odd ones."""
    first = FIRST_DEPTH + 0.2 * index / max(1, count - 1)
    early, late = int(first * passages), min(passages - 1, int((first + GAP) * passages))
    return (early, late) if index % 2 == 0 else (late, early)


class CrossParagraphSuite:
    name = "cross_paragraph"

    def __init__(self, filler: list[str], context_tokens: int, answer_tokens: int, batch_size: int):
        self.items = load_two_hop()
        self.passages = filler_passages(filler)
        self.context_tokens = context_tokens
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.items, self.passages, self.context_tokens, self.answer_tokens)

    def context(self, tokenizer: PreTrainedTokenizerBase, index: int) -> str:
        """Numbered filler passages up to the token budget, the item's bridge and answer facts in two of them."""
        chosen, used = [], 0
        while used < self.context_tokens or len(chosen) < 2:
            passage = self.passages[len(chosen) % len(self.passages)]
            used += len(tokenizer(passage, add_special_tokens=False)["input_ids"]) + 4
            chosen.append(passage)
        bridge_at, answer_at = fact_positions(index, len(self.items), len(chosen))
        item = self.items[index]
        chosen[bridge_at] = f"{chosen[bridge_at]} {item['bridge_fact']}"
        chosen[answer_at] = f"{chosen[answer_at]} {item['answer_fact']}"
        return "\n".join(f"[{n}] {p}" for n, p in enumerate(chosen, start=1))

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        prompts = [f"{self.context(tokenizer, i)}\n\n" + INSTRUCTION.format(question=item["question"])
                   for i, item in enumerate(self.items)]
        outputs = answer_prompts(model, tokenizer, prompts, self.answer_tokens, self.batch_size, "cross-paragraph")
        return [ItemResult(str(i), item["question"], output, two_hop_scores(output, item["answer"], item["bridge"]),
                           {"answer": item["answer"], "bridge": item["bridge"]})
                for i, (item, output) in enumerate(zip(self.items, outputs))]


def two_hop_scores(output: str, answer: str, bridge: str) -> dict[str, float]:
    return {"accuracy": float(contains_phrase(output, answer)), "bridge": float(contains_phrase(output, bridge))}
