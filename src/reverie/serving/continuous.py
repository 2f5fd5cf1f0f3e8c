"""Continuous batching in the server (serve.scheduling): on a llama.cpp-served model every request, streamed or
not, joins the running batch at the next decode step and leaves it when done, so a short answer is not held up by
a long one and no request waits for a batch to end. One engine per served model: after a hot switch the old
model's engine finishes the requests it has, then closes; new requests go to the new model's."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Callable

import torch

from reverie.engines.llama_cpp_continuous import ContinuousBatch, EngineClosed, Row, RowRequest, RowResult
from reverie.engines.llama_cpp_runtime import LlamaCppModel
from reverie.progress import status_line
from reverie.serving.decoding import Answer, Sampling, StopOnText, answer, until_stop
from reverie.serving.slot import ModelSlot, Served
from reverie.serving.streaming import FirstTokenStreamer, Stream, settle


class Scheduling:
    """Whether a served model is scheduled continuously: serve.scheduling, and what its runtime can do. A model
    that cannot do what was asked for is said once, as is the scheduling each model gets."""

    def __init__(self, mode: str, slots: int):
        self.mode, self.slots = mode, slots
        self._said: set[str] = set()

    def continuous(self, served: Served) -> bool:
        able = isinstance(served.loaded.model, LlamaCppModel)
        chosen = able and self.mode != "batches"
        if served.model_id not in self._said:
            self._said.add(served.model_id)
            if chosen:
                status_line(f"serve: {served.model_id} is scheduled continuously (llama.cpp, {self.slots} rows at "
                            "once, each request joining at the next step)")
            elif self.mode == "continuous":
                runtime = type(served.loaded.model).__name__
                status_line(f"serve: serve.scheduling is continuous but {served.model_id} runs on {runtime}, which "
                            "reverie cannot step row by row: serving it in batches (model.runtime: llama.cpp can)")
        return chosen


class ContinuousScheduler:
    """Requests on llama.cpp-served models, each through its model's ContinuousBatch (made at its first request),
    stepped under the slot's lock."""

    def __init__(self, slot: ModelSlot, slots: int):
        self.slot, self.slots = slot, slots
        self._engines: dict[int, tuple[Served, ContinuousBatch]] = {}  # by id(served): a rollback loads anew

    def _engine(self, served: Served) -> ContinuousBatch:
        """The engine of `served`; engines of models no longer served retire (closing once they are idle)."""
        for key, (other, engine) in list(self._engines.items()):
            if engine.closed:
                del self._engines[key]
            elif other is not served and other is not self.slot.served and other is not self.slot.canary:
                engine.retire()
        if id(served) not in self._engines:
            engine = ContinuousBatch(served.loaded.model, self.slots, self.slot.lock)
            engine.start()
            self._engines[id(served)] = (served, engine)
        return self._engines[id(served)][1]

    def _submit(self, served: Served, prompt_ids: list[int], max_tokens: int, sampling: Sampling,
                on_token: Callable[[int], None] | None = None) -> Row:
        tokenizer = served.loaded.tokenizer
        stopped = None
        if sampling.stop:
            criterion = StopOnText(tokenizer, 0, sampling.stop)
            stopped = lambda tokens: bool(criterion(torch.tensor([tokens]), None)[0])  # noqa: E731
        request = RowRequest(prompt_ids, max_tokens, eos=(tokenizer.eos_token_id,), stopped=stopped,
                             on_token=on_token, **sampling.generate_kwargs())
        try:
            return self._engine(served).submit(request)
        except EngineClosed:  # retired and closed since it was looked up: the next lookup makes a new one
            return self._engine(served).submit(request)

    async def submit(self, served: Served, prompt_ids: list[int], max_tokens: int, sampling: Sampling) -> Answer:
        """The answer of one request; a caller that is cancelled (its client left) takes its row out at the next
        step."""
        row = self._submit(served, prompt_ids, max_tokens, sampling)
        try:
            result = await asyncio.wrap_future(row.result)
        except asyncio.CancelledError:
            row.cancel()
            raise
        return answer(served.loaded.tokenizer, result.tokens, sampling.stop)

    def stream(self, served: Served, prompt_ids: list[int], max_tokens: int, sampling: Sampling,
               on_end: Callable[[], None]) -> Stream:
        """One request streamed: each step's token reaches the reader as it is drawn; setting the stream's cancel
        takes the row out at the next step. `on_end` runs when the row has left."""
        tokenizer = served.loaded.tokenizer
        streamer = FirstTokenStreamer(tokenizer)
        streamer.put(torch.tensor([prompt_ids]))  # the prompt, which the streamer skips
        outcome: Future[Answer] = Future()
        row = self._submit(served, prompt_ids, max_tokens, sampling,
                           on_token=lambda token: streamer.put(torch.tensor([token])))

        def ended(result: Future[RowResult]) -> None:
            try:
                outcome.set_result(answer(tokenizer, result.result().tokens, sampling.stop))
            except Exception as exc:
                outcome.set_exception(exc)
            streamer.end()
            settle(streamer, outcome, on_end)

        row.result.add_done_callback(ended)
        return Stream(served.model_id, until_stop(streamer, sampling.stop), row.cancelled, streamer.started, outcome)

    def close(self) -> None:
        """Every engine finishes the rows it has, then frees its context."""
        for _, engine in self._engines.values():
            engine.retire()
