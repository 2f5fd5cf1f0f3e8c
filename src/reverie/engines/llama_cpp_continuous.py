"""Continuous batching on llama.cpp: a fixed number of slots, each a llama.cpp sequence of n_ctx cells in one
context of its own. A request joins the running rows at the next decode step (its prompt prefilled in the same
`llama_decode` as the other rows' next tokens), decodes with its own sampler chain and leaves when it is done,
its sequence's cells cleared for the next request.

`LlamaCppModel.generate` runs a batch to its end, so a request that arrives a moment after one starts waits for
its longest row; here it waits for one step. The server drives it from a thread (serving/continuous.py); tests
call `step` themselves.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch

from reverie.engines.llama_cpp_runtime import UBATCH, LlamaCppModel, llama_cpp_module
from reverie.errors import ReverieError

PREFILL_PER_STEP = UBATCH  # prompt tokens one step takes in: a long prompt holds the running rows up by a bounded time
Finish = Literal["eos", "stop", "length", "cancelled"]


@dataclass(frozen=True)
class RowRequest:
    """What one row decodes: sampling as `LlamaCppModel.generate` takes it (top_k None is transformers' 50 when
    sampling; seed None draws one from torch's generator), plus two callbacks on the engine's thread: `stopped`
    says from the new tokens so far whether the row ends (stop strings), `on_token` gets each new token."""

    prompt: list[int]
    max_tokens: int
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    min_tokens: int = 0
    eos: tuple[int, ...] | None = None  # None: the model's end of sequence
    stopped: Callable[[list[int]], bool] | None = None
    on_token: Callable[[int], None] | None = None


@dataclass(frozen=True)
class RowResult:
    tokens: list[int]  # the new tokens, the end of sequence included when that ended the row
    finish: Finish
    joined: int | None  # the step whose decode first held its prompt (None: cancelled before it joined)
    finished: int  # the step at which it left


@dataclass(eq=False)
class Row:
    """One request in the engine. `cancel()` makes it leave at the next step; `result` is set once it has left
    (or fails with the error that ended it)."""

    request: RowRequest
    seed: int
    result: Future[RowResult] = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    fed: int = 0  # prompt tokens in its sequence so far
    sequence: int = -1
    sampler: Any = None
    joined: int | None = None

    def cancel(self) -> None:
        self.cancelled.set()


class EngineClosed(RuntimeError):
    """The engine has closed (retired, or its model is gone): make a new one for the model."""


class ContinuousBatch:
    """Rows of a LlamaCppModel decoded together, joining and leaving between steps, up to `slots` at once (more
    wait their turn in order). `lock` is held through each step: the server's one-generation-at-a-time lock."""

    def __init__(self, model: LlamaCppModel, slots: int, lock: threading.Lock | None = None):
        self.model, self.slots = model, slots
        self.lock = lock or threading.Lock()
        self.steps = 0
        self._lib = llama_cpp_module()
        self._opened = model.open_context(slots, model.n_ctx)  # each sequence holds a whole n_ctx row
        self._context = self._opened[0]
        self._memory = self._lib.llama_get_memory(self._context)
        self._free = list(range(slots))
        self._rows: list[Row] = []  # in the order they joined
        self._waiting: deque[Row] = deque()
        self._wake = threading.Condition()  # guards _waiting, _retired and _closed
        self._retired = self._closed = False
        self._thread: threading.Thread | None = None

    # --- what callers use --------------------------------------------------------------------------------

    def submit(self, request: RowRequest) -> Row:
        """Queue a row; it joins at the next step with a free slot. Thread-safe."""
        if not request.prompt:
            raise ReverieError("a row needs at least one prompt token")
        if request.max_tokens < 1:
            raise ReverieError(f"max_tokens is {request.max_tokens}: a row decodes at least one token")
        if (total := len(request.prompt) + request.max_tokens) > self.model.n_ctx:
            raise ReverieError(f"{total} tokens (prompt plus max_tokens) exceed this llama.cpp model's context of "
                               f"{self.model.n_ctx} (LlamaCppModel n_ctx)")
        seed = request.seed if request.seed is not None else int(torch.randint(2**31 - 1, ()).item())
        row = Row(request, seed)
        row.result.set_running_or_notify_cancel()  # only the engine ends a row: cancel() it, not its future
        with self._wake:
            if self._closed:
                raise EngineClosed(f"the continuous batch of {self.model.path.name} has closed")
            self._waiting.append(row)
            self._wake.notify()
        return row

    def start(self) -> None:
        """Step in a thread of its own whenever a row is running or waiting."""
        self._thread = threading.Thread(target=self._run, name=f"continuous {self.model.path.name}", daemon=True)
        self._thread.start()

    def retire(self) -> None:
        """Close once no row is running or waiting (its model is no longer the one new requests go to)."""
        with self._wake:
            self._retired = True
            self._wake.notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free the context now; rows still running or waiting fail with EngineClosed."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._release()

    def step(self) -> None:
        """One decode step: cancelled rows leave, waiting rows join free slots, and one llama_decode takes every
        running row's last token and the joining rows' prompts (up to PREFILL_PER_STEP of them); each row whose
        logits came out draws its next token and leaves if that ends it."""
        with self.lock:
            if self._closed:  # closed from another thread; its context is gone
                return
            for row in [row for row in self._rows if row.cancelled.is_set()]:
                self._leave(row, "cancelled")
            self._admit()
            entries, decoded, sampled, budget = [], [], [], PREFILL_PER_STEP
            for row in self._rows:
                prompt = row.request.prompt
                if row.fed == len(prompt):
                    entries.append((row.tokens[-1], row.sequence, len(prompt) + len(row.tokens) - 1, True))
                    sampled.append((row, len(entries) - 1))
                elif budget > 0:
                    chunk = prompt[row.fed : row.fed + budget]
                    entries += [(token, row.sequence, row.fed + i, row.fed + i == len(prompt) - 1)
                                for i, token in enumerate(chunk)]
                    row.fed, budget = row.fed + len(chunk), budget - len(chunk)
                    if row.joined is None:
                        row.joined = self.steps
                    if row.fed == len(prompt):
                        sampled.append((row, len(entries) - 1))
                else:
                    continue
                decoded.append(row)
            if entries:
                try:
                    self.model.decode(self._context, self._opened[1], entries)
                except Exception as exc:  # the rows of this decode fail; the engine goes on with the next
                    for row in decoded:
                        self._leave(row, error=exc)
                else:
                    for row, index in sampled:
                        self._next_token(row, index)
            self.steps += 1

    # --- inside ------------------------------------------------------------------------------------------

    def _release(self) -> None:
        """After _closed is set: no row comes in any more; those left fail, and the context is freed."""
        with self.lock:
            with self._wake:
                left, self._waiting = self._rows + list(self._waiting), deque()
            for row in left:
                if row.sampler is not None:
                    self._lib.llama_sampler_free(row.sampler)
                row.result.set_exception(EngineClosed("the continuous batch closed before this row ended"))
            self._rows.clear()
            self.model.close_context(self._opened)

    def _admit(self) -> None:
        with self._wake:
            while self._free and self._waiting:
                row = self._waiting.popleft()
                if row.cancelled.is_set():
                    row.result.set_result(RowResult([], "cancelled", None, self.steps))
                    continue
                request = row.request
                row.sequence = self._free.pop(0)
                row.sampler = self.model.sampler(request.do_sample, request.temperature, request.top_p,
                                                 request.top_k, row.seed,
                                                 list(self._eos(request)) if request.min_tokens else [])
                self._rows.append(row)

    def _eos(self, request: RowRequest) -> tuple[int, ...]:
        if request.eos is not None:
            return request.eos
        return () if self.model.config.eos_token_id is None else (self.model.config.eos_token_id,)

    def _next_token(self, row: Row, index: int) -> None:
        """Draw the row's token from the logits at `index` of the decode; a callback that fails fails its row only."""
        request = row.request
        try:
            token = self._lib.llama_sampler_sample(row.sampler, self._context, index)
            row.tokens.append(token)
            if request.on_token is not None:
                request.on_token(token)
            if token in self._eos(request):
                finish: Finish | None = "eos"
            elif request.stopped is not None and request.stopped(row.tokens):
                finish = "stop"
            elif len(row.tokens) >= request.max_tokens:
                finish = "length"
            else:
                finish = None
        except Exception as exc:
            self._leave(row, error=exc)
            return
        if finish is not None:
            self._leave(row, finish)
        elif request.min_tokens and len(row.tokens) == request.min_tokens:  # eos allowed from here on
            self._lib.llama_sampler_free(self._lib.llama_sampler_chain_remove(row.sampler, 0))

    def _leave(self, row: Row, finish: Finish = "cancelled", error: BaseException | None = None) -> None:
        """The row's cells are cleared and its slot given to the next row; then its result is set."""
        self._lib.llama_memory_seq_rm(self._memory, row.sequence, -1, -1)
        self._lib.llama_sampler_free(row.sampler)
        row.sampler = None
        self._rows.remove(row)
        self._free.append(row.sequence)
        if error is not None:
            row.result.set_exception(error)
        else:
            row.result.set_result(RowResult(row.tokens, finish, row.joined, self.steps))

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._waiting or self._rows or self._closed or self._retired):
                    self._wake.wait()
                if self._closed:
                    return
                if not (self._waiting or self._rows):  # retired with nothing left to finish: closed at once, so
                    self._closed = True  # that a submit from now on is refused rather than lost
                    break
            try:
                self.step()
            except BaseException:  # a bug in the engine itself: its rows fail, the next request gets a new one
                self.close()
                raise
        self._release()
