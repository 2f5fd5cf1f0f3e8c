"""Evaluation: graders, closed-book question answering, multiple-choice log-likelihood, A/B logit checks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.multiple_choice import ChoiceItem
from reverie.data.text import contains_phrase, normalize
from reverie.engines.generation import generate
from reverie.engines.prompts import user_prompt_ids
from reverie.progress import progress_bar

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
) -> tuple[dict[str, float], list[QAResult]]:
    """Ask each question without its document (greedy) and grade by normalised containment and token F1."""
    prompts = [user_prompt_ids(tokenizer, q) for q, _ in items]
    answers = generate(model, tokenizer, prompts, max_new_tokens, batch_size, description="closed-book QA")
    results = [QAResult(q, a, pred[0], contains_answer(pred[0], a)) for (q, a), pred in zip(items, answers)]
    n = max(1, len(results))
    metrics = {
        "accuracy": sum(r.correct for r in results) / n,
        "f1": sum(token_f1(r.prediction, r.gold) for r in results) / n,
        "n": float(len(results)),
    }
    return metrics, results


@torch.inference_mode()
def _continuation_logprob(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> float:
    context_ids = tokenizer(context, add_special_tokens=True)["input_ids"]
    continuation_ids = tokenizer(" " + continuation.strip(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context_ids + continuation_ids])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(1, targets[:, None])[:, 0]
    return float(picked[len(context_ids) - 1 :].sum())


def choice_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: list[ChoiceItem]) -> dict:
    """Share of items where the correct solution has the higher log-likelihood after the goal."""
    correct = 0
    with progress_bar("general check", len(items)) as bar:
        for item in items:
            scores = [_continuation_logprob(model, tokenizer, item.goal, c) for c in item.choices]
            correct += int(scores.index(max(scores)) == item.label)
            bar.advance()
    return {"accuracy": correct / max(1, len(items)), "n": float(len(items))}
