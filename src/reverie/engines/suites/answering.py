"""One greedy answer per prompt, each asked as a one-turn user message: what the open-answer suites share."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.engines.generation import generate
from reverie.engines.prompts import user_prompt_ids


def answer_prompts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], tokens: int,
                   batch_size: int, description: str) -> list[str]:
    ids = [user_prompt_ids(tokenizer, prompt) for prompt in prompts]
    return [outputs[0] for outputs in generate(model, tokenizer, ids, tokens, batch_size, description=description)]
