"""Admission and micro-batching: at most `max_queue` requests are admitted (the rest get 503 at once), and
non-streaming requests that arrive within `batch_wait_ms` of each other are generated as one left-padded
batch, which on a CPU costs little more than one of them."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from transformers import StoppingCriteriaList

from reverie.serving.decoding import Answer, Sampling, StopOnText, answer
from reverie.serving.slot import ModelSlot, Served


class Overloaded(Exception):
    """The queue is full: answered 503 at once."""


@dataclass
class Job:
    served: Served  # the model the request was checked and tokenized against: it is generated on that one
    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling
    future: asyncio.Future = field(repr=False)


class Admission:
    """Counts requests from admission to answer; refuses beyond the limit instead of queueing forever."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()  # streams are released from a worker thread

    def acquire(self, count: int = 1) -> None:
        """Admit `count` generations (a request's choices) together, or none of them."""
        with self._lock:
            if self.active + count > self.limit:
                raise Overloaded(f"{self.active} generations in progress, {count} more asked "
                                 f"(serve.max_queue = {self.limit})")
            self.active += count

    def release(self, count: int = 1) -> None:
        with self._lock:
            self.active -= count

    @contextmanager
    def hold(self, count: int) -> Iterator[None]:
        self.acquire(count)
        try:
            yield
        finally:
            self.release(count)


@torch.inference_mode()
def generate_batch(slot: ModelSlot, jobs: list[Job]) -> list[Answer]:
    """One batch, all of one model and one Sampling; each job keeps its own token budget."""
    with slot.lock:
        served = jobs[0].served
        model, tokenizer = served.loaded.model, served.loaded.tokenizer
        pad = tokenizer.pad_token_id
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs], device=model.device)
        mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs],
                            device=model.device)
        sampling = jobs[0].sampling
        stopping = StoppingCriteriaList([StopOnText(tokenizer, width, sampling.stop)] if sampling.stop else [])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(j.max_tokens for j in jobs),
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, stopping_criteria=stopping,
                             **sampling.generate_kwargs())
    return [answer(tokenizer, row[: job.max_tokens], sampling.stop) for job, row in zip(jobs, out[:, width:].tolist())]


class Batcher:
    """Collects jobs and runs them in batches of one model and equal Sampling, one batch at a time."""

    def __init__(self, slot: ModelSlot, batch_size: int, wait_ms: int):
        self.slot = slot
        self.batch_size = batch_size
        self.wait = wait_ms / 1000
        self.queue: asyncio.Queue[Job] = asyncio.Queue()

    async def submit(self, served: Served, prompt_ids: list[int], max_tokens: int, sampling: Sampling) -> Answer:
        job = Job(served, prompt_ids, max_tokens, sampling, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.wait
            while len(jobs) < self.batch_size and (left := deadline - loop.time()) > 0:
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            jobs = [j for j in jobs if not j.future.cancelled()]  # a client that left is not generated for
            for kind in dict.fromkeys((id(j.served), j.sampling) for j in jobs):
                group = [j for j in jobs if (id(j.served), j.sampling) == kind]
                try:
                    outputs = await loop.run_in_executor(None, generate_batch, self.slot, group)
                except Exception as exc:  # the batch's requests fail with it; the server keeps running
                    for job in group:
                        if not job.future.done():  # a client that left has cancelled its future
                            job.future.set_exception(exc)
                    continue
                for job, output in zip(group, outputs):
                    if not job.future.cancelled():
                        job.future.set_result(output)
