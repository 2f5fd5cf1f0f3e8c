"""Grounded answers: each held-out question asked with its document in the prompt; the answer should state the
document's answer (accuracy) and claim nothing the document does not support (hallucination: any unsupported
claim; unsupported: their share), by the lexical support check of engines/grounding.py."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.knowledge import Knowledge
from reverie.data.splits import knowledge_held_out
from reverie.data.text import contains_phrase
from reverie.engines.grounding import check_support
from reverie.engines.suites.answering import answer_prompts
from reverie.engines.suites.base import ItemResult, fingerprint

INSTRUCTION = "Document:\n{document}\n\nAnswer the question using only the document above.\nQuestion: {question}"


def grounded_scores(output: str, gold: str, document: str, question: str) -> tuple[dict[str, float], list[str]]:
    """The item's metrics and the claims found unsupported."""
    support = check_support(output, document, question)
    scores = {"accuracy": float(contains_phrase(output, gold)),
              "hallucination": float(bool(support.unsupported)), "unsupported": support.unsupported_share}
    return scores, support.unsupported


class GroundedSuite:
    name = "grounded"

    def __init__(self, knowledge: Knowledge, answer_tokens: int, batch_size: int):
        self.items = [(doc.text, qa.question, qa.answer) for doc, qa in knowledge_held_out(knowledge)]
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.items, self.answer_tokens)

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        prompts = [INSTRUCTION.format(document=document, question=question) for document, question, _ in self.items]
        outputs = answer_prompts(model, tokenizer, prompts, self.answer_tokens, self.batch_size, "grounded")
        results = []
        for index, ((document, question, gold), output) in enumerate(zip(self.items, outputs)):
            scores, unsupported = grounded_scores(output, gold, document, question)
            results.append(ItemResult(str(index), question, output, scores,
                                      {"gold": gold, "unsupported_claims": unsupported}))
        return results
