"""From generated tokens to an answer: how a request samples, where its answer ends (end of sequence, a stop
sequence, the token budget) and so which finish_reason it reports; batches and streams share all of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria

from reverie.engines.generation import sampling_kwargs


@dataclass(frozen=True)
class Sampling:
    """How one request samples; requests with equal Sampling can share a batch."""

    temperature: float
    top_p: float
    stop: tuple[str, ...]

    @classmethod
    def of(cls, temperature: float, top_p: float, stop: tuple[str, ...]) -> Sampling:
        """Every greedy request is the same Sampling (0, 1), so that they batch together."""
        sampling = cls(temperature, top_p, stop)
        return cls(0.0, 1.0, stop) if sampling.greedy else sampling

    @property
    def greedy(self) -> bool:
        return not sampling_kwargs(self.temperature, self.top_p)["do_sample"]

    def generate_kwargs(self) -> dict:
        return sampling_kwargs(self.temperature, self.top_p)


@dataclass(frozen=True)
class Answer:
    text: str
    completion_tokens: int
    finish_reason: str  # 'stop' (end of sequence or a stop sequence) | 'length' (the budget ran out)


def first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    """Where the earliest stop sequence begins in `text`, if one is there."""
    found = [index for sequence in stop if (index := text.find(sequence)) >= 0]
    return min(found, default=None)


def answer(tokenizer: PreTrainedTokenizerBase, row: list[int], stop: tuple[str, ...]) -> Answer:
    """The answer in one row of new tokens (already cut to the request's budget)."""
    ended = tokenizer.eos_token_id in row
    if ended:
        row = row[: row.index(tokenizer.eos_token_id)]
    while row and row[-1] == tokenizer.pad_token_id:  # a row that stopped early is padded to the batch's length
        row = row[:-1]
    text = tokenizer.decode(row, skip_special_tokens=True)
    if (cut := first_stop(text, stop)) is not None:
        return Answer(text[:cut], len(row), "stop")
    return Answer(text, len(row), "stop" if ended else "length")


class StopOnText(StoppingCriteria):
    """Ends each row once its new text holds a stop sequence (the text is cut there by `answer`).

    Only the last few tokens are decoded at each step, enough to hold the longest stop sequence (a character is
    at most 4 byte tokens), so the check costs the same at the 1000th token as at the first. (transformers'
    `stop_strings` matches token strings, and on byte-level vocabularies it stopped where the text held no stop.)
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, start: int, stop: tuple[str, ...]):
        self.tokenizer, self.start, self.stop = tokenizer, start, stop
        self.window = 4 * max(map(len, stop)) + 4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tail = input_ids[:, max(self.start, input_ids.shape[1] - self.window):]
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True)
        return torch.tensor([first_stop(text, self.stop) is not None for text in texts], dtype=torch.bool,
                            device=input_ids.device)


def until_stop(pieces: Iterable[str], stop: tuple[str, ...]) -> Iterator[str]:
    """Streamed text up to the first stop sequence; a tail that could begin one is held back until it cannot."""
    text, sent = "", 0
    for piece in pieces:
        text += piece
        if (cut := first_stop(text, stop)) is not None:
            yield text[sent:cut]
            return
        held = max((k for sequence in stop for k in range(1, len(sequence)) if text.endswith(sequence[:k])),
                   default=0)
        yield text[sent : len(text) - held]
        sent = len(text) - held
    yield text[sent:]
