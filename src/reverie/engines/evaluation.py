"""Evaluation: graders and closed-book question answering."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.text import contains_phrase, normalize
from reverie.engines.generation import generate
from reverie.engines.models import LoadedModel
from reverie.engines.prompts import user_prompt_ids

Grader = Callable[[list[tuple[str, str, str]]], list[bool]]  # [(question, gold, prediction)] -> [correct?]


def contains_answer(prediction: str, gold: str) -> bool:
    """Normalised containment: the gold answer occurs as whole words in the prediction."""
    return contains_phrase(prediction, gold)


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass
class QAResult:
    question: str
    gold: str
    prediction: str
    correct: bool


def closed_book_qa(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: list[tuple[str, str]],
    max_new_tokens: int,
    batch_size: int,
    grader: Grader | None = None,
) -> tuple[dict[str, float], list[QAResult]]:
    """Ask each question without its document (greedy); grade by `grader` (default: normalised containment).
    Token F1 is reported alongside."""
    prompts = [user_prompt_ids(tokenizer, q) for q, _ in items]
    answers = [pred[0] for pred in generate(model, tokenizer, prompts, max_new_tokens, batch_size,
                                            description="closed-book QA")]
    if grader is None:
        verdicts = [contains_answer(pred, gold) for pred, (_, gold) in zip(answers, items)]
    else:
        verdicts = grader([(q, gold, pred) for pred, (q, gold) in zip(answers, items)])
    results = [QAResult(q, a, pred, ok) for (q, a), pred, ok in zip(items, answers, verdicts)]
    n = max(1, len(results))
    metrics = {
        "accuracy": sum(r.correct for r in results) / n,
        "f1": sum(token_f1(r.prediction, r.gold) for r in results) / n,
        "n": float(len(results)),
    }
    return metrics, results


def probe_accuracy(loaded: LoadedModel, probe: list[tuple[str, str]], max_new_tokens: int, batch_size: int) -> float:
    """Closed-book accuracy on probe questions: a phase's before/after regression check."""
    metrics, _ = closed_book_qa(loaded.model, loaded.tokenizer, probe, max_new_tokens, batch_size)
    return metrics["accuracy"]
