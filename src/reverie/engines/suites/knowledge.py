"""Knowledge: closed-book answers to the held-out questions about the documents the cycle consolidated."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.knowledge import Knowledge
from reverie.data.splits import knowledge_held_out
from reverie.engines.evaluation import Grader, closed_book_qa, token_f1
from reverie.engines.suites.base import ItemResult, fingerprint


class KnowledgeSuite:
    name = "knowledge"

    def __init__(self, knowledge: Knowledge, max_new_tokens: int, batch_size: int, grader: Grader | None = None):
        self.questions = [(qa.question, qa.answer) for _, qa in knowledge_held_out(knowledge)]
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.grader = grader

    def fingerprint(self) -> str:
        return fingerprint(self.questions, self.max_new_tokens, self.grader is not None)

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        _, answers = closed_book_qa(model, tokenizer, self.questions, self.max_new_tokens, self.batch_size,
                                    self.grader)
        return [ItemResult(str(i), a.question, a.prediction,
                           {"accuracy": float(a.correct), "f1": token_f1(a.prediction, a.gold)}, {"gold": a.gold})
                for i, a in enumerate(answers)]
