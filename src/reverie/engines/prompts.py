"""How questions are put to a model: its chat template when it has one, a plain template otherwise."""

from __future__ import annotations

from typing import Callable

from transformers import PreTrainedTokenizerBase


def user_prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a one-turn user message, ending where the assistant's answer starts."""
    if tokenizer.chat_template:
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])
    return tokenizer(f"Question: {text}\nAnswer:", add_special_tokens=True)["input_ids"]


def token_counter(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], int]:
    """Counts a text's tokens without special tokens: what align.max_prompt_tokens limits, wherever it is checked."""
    return lambda text: len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def open_book_question(context: str, question: str) -> str:
    return f"Read the text and answer the question briefly.\n\nText: {context}\n\nQuestion: {question}"
