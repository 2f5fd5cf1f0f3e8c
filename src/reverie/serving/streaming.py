"""Streaming one request token by token (server-sent events), on the model it started with."""

from __future__ import annotations

import threading
from typing import Iterator

import torch
from transformers import TextIteratorStreamer

from reverie.engines.generation import sampling_kwargs
from reverie.serving.slot import ModelSlot


def stream_text(slot: ModelSlot, prompt_ids: list[int], max_tokens: int, temperature: float
                ) -> tuple[str, Iterator[str]]:
    """(model id, pieces of text as they are generated). The model lock is held until generation ends."""
    served = slot.served
    tokenizer = served.loaded.tokenizer
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def run() -> None:
        try:
            with slot.lock, torch.inference_mode():
                ids = torch.tensor([prompt_ids])
                served.loaded.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, streamer=streamer, **sampling_kwargs(temperature))
        except Exception:
            streamer.end()  # the client sees the stream end rather than waiting forever
            raise

    threading.Thread(target=run, daemon=True).start()
    return served.model_id, iter(streamer)
