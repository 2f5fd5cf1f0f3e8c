"""Streaming one request token by token (server-sent events), on the model it started with."""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from reverie.engines.generation import sampling_kwargs
from reverie.serving.slot import ModelSlot


class StopWhenSet(StoppingCriteria):
    """Ends generation once `event` is set: a client that left should not keep the model busy."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def stream_text(slot: ModelSlot, prompt_ids: list[int], max_tokens: int, temperature: float,
                on_end: Callable[[], None]) -> tuple[str, Iterator[str], threading.Event]:
    """(model id, pieces of text as they are generated, an event that stops generation when set). The model
    lock is held until generation ends; then `on_end` runs, whether or not anyone read the pieces."""
    served = slot.served
    tokenizer = served.loaded.tokenizer
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancel = threading.Event()

    def run() -> None:
        try:
            with slot.lock, torch.inference_mode():
                ids = torch.tensor([prompt_ids])
                served.loaded.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopWhenSet(cancel)]), **sampling_kwargs(temperature))
        except Exception:
            streamer.end()  # the client sees the stream end rather than waiting forever
            raise
        finally:
            on_end()

    threading.Thread(target=run, daemon=True).start()
    return served.model_id, iter(streamer), cancel
