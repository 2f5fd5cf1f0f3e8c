"""Streaming one request token by token (server-sent events), on the model it started with."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from starlette.responses import StreamingResponse
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from reverie.serving.decoding import Answer, Sampling, StopOnText, answer, until_stop
from reverie.serving.errors import error_body
from reverie.serving.slot import ModelSlot, Served

log = logging.getLogger(__name__)


class StopWhenSet(StoppingCriteria):
    """Ends generation once `event` is set: a client that left should not keep the model busy."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class Stream:
    """A generation under way: its text as it comes, then how it ended."""

    model_id: str
    pieces: Iterator[str]  # already cut before a stop sequence
    cancel: threading.Event  # set it to stop generating
    started: Future[None]  # done at the first new token; failed if generation failed before one
    outcome: Future[Answer]  # done when generation has ended (with the tokens and finish_reason)


class FirstTokenStreamer(TextIteratorStreamer):
    """Also says when the first new token is out, so a failure before it is answered as an error (with the status
    the same request would get unstreamed) rather than as an empty stream."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.started: Future[None] = Future()
        self._puts = 0

    def put(self, value: torch.Tensor) -> None:
        super().put(value)
        self._puts += 1
        if self._puts == 2:  # the first put is the prompt
            self.started.set_result(None)


def settle(streamer: FirstTokenStreamer, outcome: Future[Answer], on_end: Callable[[], None]) -> None:
    """Once generation has ended (`outcome` set): `on_end` runs, and `started` is settled if no token came, failed
    with generation's error if there was one."""
    on_end()
    if not streamer.started.done():
        if (error := outcome.exception()) is None:
            streamer.started.set_result(None)
        else:
            streamer.started.set_exception(error)


def stream_text(slot: ModelSlot, served: Served, prompt_ids: list[int], max_tokens: int, sampling: Sampling,
                on_end: Callable[[], None]) -> Stream:
    """Start generating on `served` (the model the request was checked against) in a thread. The model lock is
    held until generation ends; then `on_end` runs, whether or not anyone read the pieces."""
    tokenizer = served.loaded.tokenizer
    streamer = FirstTokenStreamer(tokenizer)
    cancel = threading.Event()
    outcome: Future[Answer] = Future()
    stopping = StoppingCriteriaList([StopWhenSet(cancel)])
    if sampling.stop:
        stopping.append(StopOnText(tokenizer, len(prompt_ids), sampling.stop))

    def run() -> None:
        try:
            with slot.lock, torch.inference_mode():
                ids = torch.tensor([prompt_ids], device=served.loaded.model.device)
                out = served.loaded.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, streamer=streamer,
                    stopping_criteria=stopping, **sampling.generate_kwargs())
            outcome.set_result(answer(tokenizer, out[0, len(prompt_ids) :].tolist(), sampling.stop))
        except BaseException as exc:
            outcome.set_exception(exc)
            streamer.end()  # the reader sees the pieces end rather than waiting forever
        finally:
            settle(streamer, outcome, on_end)

    threading.Thread(target=run, daemon=True).start()
    return Stream(served.model_id, until_stop(streamer, sampling.stop), cancel, streamer.started, outcome)


def events(ident: str, stream: Stream, chat: bool, prompt_tokens: int, include_usage: bool, first: dict,
           done: Callable[[str], None], failed: Callable[[], None]) -> Iterator[str]:
    """OpenAI's server-sent events: a chunk per piece of text, one with the finish_reason, with include_usage one
    with the usage and no choices, then [DONE]. `first` rides on a chat's first chunk (its citations); `done` gets
    the whole text, or `failed` runs when generation failed midway."""
    kind, created = ("chat.completion.chunk" if chat else "text_completion"), int(time.time())

    def event(choices: list[dict], **extra: object) -> str:
        body = {"id": ident, "object": kind, "created": created, "model": stream.model_id, "choices": choices}
        return f"data: {json.dumps(body | ({'usage': None} if include_usage else {}) | extra)}\n\n"

    def piece(text: str, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": {"content": text} if text else {}} if chat else {"index": 0, "text": text}
        return event([choice | {"finish_reason": finish}])

    sent: list[str] = []
    if chat:
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], **first)
    for text in stream.pieces:
        if text:
            sent.append(text)
            yield piece(text)
    try:
        ended = stream.outcome.result()
    except Exception as exc:  # the status line is long gone: the stream says so, as OpenAI's does
        log.exception("generation failed in the middle of stream %s", ident)
        failed()
        yield f"data: {json.dumps(error_body(f'generation failed: {type(exc).__name__}', 'server_error'))}\n\n"
        return
    done("".join(sent))
    yield piece("", ended.finish_reason)
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": ended.completion_tokens,
                 "total_tokens": prompt_tokens + ended.completion_tokens}
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


class CancellingStream(StreamingResponse):
    """A stream that stops generation however the response ends: finished, failed, or a client that left, even
    one that left before the first byte (then the body's generator never starts, so it cannot do this itself)."""

    def __init__(self, content: Iterator[str], cancel: threading.Event):
        super().__init__(content, media_type="text/event-stream")
        self.cancel = cancel

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cancel.set()
