"""Pairwise judges for the preference suite: which of two answers to the same conversation is better.

eval.preference_judge names one: a registry alias of a reward model (`reverie rm train --alias judge`, trained
on the judge split, so it never saw the pairs the policy was optimised on), or 'lm:<model source>', a causal LM
asked which response is better. A judge's `identity` is part of the suite's cache key and is printed on the card.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.config import ModelConfig
from reverie.engines.models import load_pretrained, resolve_source
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.scoring import continuation_logprobs
from reverie.errors import ReverieError
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

if TYPE_CHECKING:
    from reverie.engines.reward_model import RewardScorer

LM_PREFIX = "lm:"
Messages = list[dict]
JUDGE_PROMPT = (
    "Compare two responses to the conversation below and decide which one is better: more helpful, correct, "
    "clear and harmless.\n\n{conversation}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
    "Which response is better? Reply with A or B."
)
VERDICT_WORDS = (("A", " A"), ("B", " B"))


class PairJudge(Protocol):
    identity: str  # who judged, in words: the card prints it, and a different judge means a new result
    model_id: str | None  # the registry version behind the judge, when it is one
    order_free: bool  # prefer(m, a, b) == 1 - prefer(m, b, a) by construction, so one order suffices

    def prefer(self, messages: list[Messages], first: list[str], second: list[str]) -> list[float]:
        """P(first[i] is the better answer to messages[i]) for every i, in batches."""
        ...


class RewardModelJudge:
    """P(first better) = sigmoid(r(first) - r(second)), the Bradley-Terry model a reward model is trained under.
    Each answer is scored on its own, so the order they are passed in cannot matter: order_free."""

    order_free = True

    def __init__(self, scorer: RewardScorer, identity: str, model_id: str):
        self.scorer = scorer
        self.identity = identity
        self.model_id = model_id

    def prefer(self, messages: list[Messages], first: list[str], second: list[str]) -> list[float]:
        rewards = torch.tensor(self.scorer.score(messages + messages, first + second))
        return torch.sigmoid(rewards[: len(first)] - rewards[len(first):]).tolist()


class LMJudge:
    """A causal LM shown the conversation and both responses (A, then B) and asked which is better; P(A) is the
    softmax over the log-probabilities of the words "A" and "B" (either spelling) as its reply. One order per
    call: position bias shows when the suite asks both orders and they disagree."""

    order_free = False
    model_id = None

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int, identity: str):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.identity = identity
        self.spellings = [[tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
                          for words in VERDICT_WORDS]

    def prefer(self, messages: list[Messages], first: list[str], second: list[str]) -> list[float]:
        prompts = [user_prompt_ids(self.tokenizer, JUDGE_PROMPT.format(conversation=conversation_text(m), first=a,
                                                                        second=b))
                   for m, a, b in zip(messages, first, second)]
        rows = [(prompt, reply) for prompt in prompts for replies in self.spellings for reply in replies]
        scores = torch.tensor(continuation_logprobs(self.model, self.tokenizer, rows, self.batch_size))
        a, b = scores.view(len(prompts), 2, -1).logsumexp(dim=2).unbind(dim=1)
        return torch.sigmoid(a - b).tolist()


def conversation_text(messages: Messages) -> str:
    return "\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in messages)


def judge_record(ws: Workspace, spec: str) -> ModelRecord | None:
    """The reward model an alias judge names (None for an 'lm:' judge); a missing alias or one that is not a
    reward model is an error that says how to make one."""
    if spec.startswith(LM_PREFIX):
        return None
    model_id = ws.registry.get_alias(spec)
    if model_id is None:
        raise ReverieError(f"eval.preference_judge: no model behind the alias {spec!r}; train a judge on the judge "
                           f"split with `reverie rm train --alias {spec}`, or set eval.preference_judge to "
                           "'lm:<model source>'")
    record = ws.registry.get_model(model_id)
    if record.status != "reward":
        raise ReverieError(f"eval.preference_judge: the alias {spec!r} points at {record.id}, a {record.status} model, "
                           f"not a reward model; run `reverie rm train --alias {spec}`")
    return record


def judge_identity(ws: Workspace, spec: str) -> str:
    """How a judge is named without loading it: the reward model version and its alias, or the lm: source."""
    record = judge_record(ws, spec)
    return spec if record is None else f"reward model {record.id} (alias {spec})"


def load_judge(ws: Workspace, spec: str) -> PairJudge:
    """The judge eval.preference_judge names, loaded."""
    config = ws.config.eval
    record = judge_record(ws, spec)
    if record is not None:
        from reverie.engines.reward_model import load_reward_scorer  # only an alias judge needs a reward model

        return RewardModelJudge(load_reward_scorer(ws, record), judge_identity(ws, spec), record.id)
    source = spec[len(LM_PREFIX):].strip()
    if not source:
        raise ReverieError("eval.preference_judge: 'lm:' needs a model source after it, e.g. lm:HuggingFaceTB/"
                           "SmolLM2-360M-Instruct")
    directory = resolve_source(source, ws.cache_dir, ws.root)
    loaded = load_pretrained(directory, ModelConfig(trust_remote_code=config.preference_judge_trust_remote_code))
    return LMJudge(loaded.model, loaded.tokenizer, config.batch_size, spec)
