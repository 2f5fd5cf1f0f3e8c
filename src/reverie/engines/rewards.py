"""The rewards GRPO sums: a learned reward model, and verifiable checks that need no model (the knowledge answer
contained, valid JSON, refusing what must be refused). Each has TRL's reward-function signature: the prompts,
the sampled completions (assistant messages), and the dataset's columns as keyword lists."""

from __future__ import annotations

from typing import Any, Callable

from reverie.data.text import contains_phrase
from reverie.engines.refusal import is_refusal
from reverie.engines.suites.structured import extract_json_object

RewardFunction = Callable[..., list[float]]


def _text(completion: Any) -> str:
    """A completion as text: TRL passes conversational completions as a list of messages."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


def answer_contained(prompts: list, completions: list, answer: list[str], **_: Any) -> list[float]:
    """1 when the prompt's answer is in the completion (prompts without an answer score 0)."""
    return [float(bool(a) and contains_phrase(_text(c), a)) for c, a in zip(completions, answer)]


def valid_json(prompts: list, completions: list, **_: Any) -> list[float]:
    """1 when the completion holds a parseable JSON object."""
    return [float(extract_json_object(_text(c)) is not None) for c in completions]


def refusal(prompts: list, completions: list, must_refuse: list[int], **_: Any) -> list[float]:
    """1 for refusing a request that must be refused or answering one that must not; 0 otherwise, and for
    prompts that say neither (must_refuse -1)."""
    return [float(flag >= 0 and is_refusal(_text(c)) == bool(flag)) for c, flag in zip(completions, must_refuse)]


def reward_model(scorer: Any) -> RewardFunction:
    """The reward model's score of each (prompt, completion), through a RewardScorer."""
    def score(prompts: list, completions: list, **_: Any) -> list[float]:
        return scorer.score([list(p) if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts],
                            [_text(c) for c in completions])
    score.__name__ = "reward_model"  # TRL names the logged reward after the function
    return score


VERIFIABLE: dict[str, RewardFunction] = {
    "answer_contained": answer_contained, "valid_json": valid_json, "refusal": refusal,
}
