"""Preference: the candidate and an opponent (the current release) answer the same instructions, a pairwise
judge compares each pair in both orders, and the suite reports the weighted win rate (ties half), both sides'
mean answer length and a length-controlled win rate.

Unlike the other suites this one is pairwise: `answer` runs on one model at a time (so the runner can hold one
model in memory and cache each model's answers), `compare` turns two answer lists into per-item results.

Length control (AlpacaEval's idea, Dubois et al. 2024): judges, reward models included, prefer longer answers,
so a model can buy win rate with length. A logistic regression of the outcome (a tie is the fractional target
0.5) on x = tanh(length difference / its standard deviation), with an intercept a, estimates how the outcome
moves with length; the win rate at equal lengths is sigmoid(a). Each item gets lc = win - sigmoid(a + b x) +
sigmoid(a): the item's outcome with the length effect the fit attributes to it removed. Because the intercept
is not penalised, its score equation makes mean(sigmoid(a + b x)) equal the mean outcome, so mean(lc) is
exactly sigmoid(a), and per-item values let the usual bootstrap give an interval (one that treats the fitted a
and b as fixed).

Degenerate inputs: the slope has a weak Gaussian prior (ridge LENGTH_RIDGE), so lengths that separate wins from
losses perfectly (then the rate at equal lengths is only as sharp as the gap between them), or that never vary
(x is then 0 and b stays 0), still give a finite fit. When every outcome is the same there is nothing for
length to explain and lc = win: the fit's value for all ties, and its limit for all wins or all losses, where
the intercept has no finite optimum.
"""

from __future__ import annotations

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.engines.generation import generate
from reverie.engines.preference_judge import PairJudge
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.suites.base import ItemResult, fingerprint
from reverie.errors import ReverieError

LENGTH_RIDGE = 0.1  # precision of the prior on the length slope b: N(0, 10), weak for x in (-1, 1)
NEWTON_STEPS = 100


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1 + np.tanh(np.asarray(z, dtype=float) / 2))  # no overflow for any z


def length_controlled(wins: list[float], lengths: list[float], reference_lengths: list[float]) -> list[float]:
    """Per-item length-controlled outcomes whose mean is the fitted win rate at equal lengths (module docstring)."""
    y = np.asarray(wins, dtype=float)
    if y.size == 0 or y.min() == y.max():
        return y.tolist()
    diff = np.asarray(lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    spread = diff.std()
    x = np.tanh(diff / spread) if spread > 0 else np.zeros_like(diff)
    design = np.stack([np.ones_like(x), x], axis=1)
    penalty = np.diag([0.0, LENGTH_RIDGE])

    def objective(theta: np.ndarray) -> float:
        z = design @ theta
        return float(np.sum(y * z - np.logaddexp(0, z)) - 0.5 * theta @ penalty @ theta)

    theta = np.zeros(2)
    for _ in range(NEWTON_STEPS):  # Newton on a strictly concave objective, halving a step that overshoots
        p = _sigmoid(design @ theta)
        gradient = design.T @ (y - p) - penalty @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        while objective(theta + step) < objective(theta) and np.abs(step).max() > 1e-12:
            step /= 2
        theta = theta + step
        if np.abs(step).max() < 1e-10:
            break
    a, b = theta
    return (y - _sigmoid(a + b * x) + _sigmoid(a)).tolist()


def outcome(first: float, second: float) -> float:
    """The candidate's win from P(candidate better) with it shown first and shown second: their mean, AlpacaEval's
    weighted win. A sure judge gives 1 or 0, a tie or a verdict the order decides about 0.5, and an unsure one
    (a weak reward model's sigmoid(r1 - r2) near 0.5) about 0.5 too, where a threshold at 0.5 would turn a
    coin flip into a whole win."""
    return (first + second) / 2


class PreferenceSuite:
    name = "preference"
    SCORING = "weighted"  # how an item's outcome is made from the verdicts: part of the stored results' key

    def __init__(self, prompts: list[str], answer_tokens: int, batch_size: int):
        self.prompts = prompts
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.prompts, self.answer_tokens)

    def answer(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """Greedy answers to every prompt, in order."""
        ids = [user_prompt_ids(tokenizer, p) for p in self.prompts]
        return [o[0] for o in generate(model, tokenizer, ids, self.answer_tokens, self.batch_size,
                                       description="preference")]

    def compare(self, answers: list[str], reference: list[str], judge: PairJudge | None,
                opponent: str) -> list[ItemResult]:
        """Per-item results of `answers` against the opponent's `reference` answers. Identical answers are a tie
        without asking the judge (so a model against itself needs none)."""
        if not len(answers) == len(reference) == len(self.prompts):
            raise ValueError(f"{len(self.prompts)} prompts, {len(answers)} answers, {len(reference)} reference answers")
        verdicts = {i: (0.5, 0.5) for i in range(len(self.prompts))}
        differ = [i for i, (ours, theirs) in enumerate(zip(answers, reference)) if ours != theirs]
        if differ:
            if judge is None:
                raise ReverieError(f"preference: {len(differ)} answers differ from {opponent}'s and no judge is set")
            verdicts |= dict(zip(differ, self._judged(judge, [self.prompts[i] for i in differ],
                                                      [answers[i] for i in differ], [reference[i] for i in differ])))
        wins = [outcome(*verdicts[i]) for i in range(len(self.prompts))]
        lengths, reference_lengths = [len(a) for a in answers], [len(a) for a in reference]
        controlled = length_controlled(wins, lengths, reference_lengths)
        results = []
        for i, (prompt, ours, theirs) in enumerate(zip(self.prompts, answers, reference)):
            scores = {"win_rate": wins[i], "lc_win_rate": controlled[i], "length": float(lengths[i]),
                      "reference_length": float(reference_lengths[i])}
            first, second = verdicts[i]
            detail = {"reference": theirs, "opponent": opponent, "judge": judge.identity if ours != theirs else None,
                      "candidate_first": first, "candidate_second": second}
            results.append(ItemResult(str(i), prompt, ours, scores, detail))
        return results

    @staticmethod
    def _judged(judge: PairJudge, prompts: list[str], ours: list[str],
                theirs: list[str]) -> list[tuple[float, float]]:
        """P(candidate better) with the candidate's answer shown first, and shown second."""
        messages = [[{"role": "user", "content": prompt}] for prompt in prompts]
        first = judge.prefer(messages, ours, theirs)
        # an order-free judge (a reward model) would only give the complement of its first verdict
        second = first if judge.order_free else [1 - p for p in judge.prefer(messages, theirs, ours)]
        return [(float(p), float(q)) for p, q in zip(first, second)]
