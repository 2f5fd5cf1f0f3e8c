"""Continuous batching (serve.scheduling): rows of a llama.cpp model join a running batch at the next decode step
and leave when done; the engine stepped by hand, the server's scheduler, and `reverie serve` on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reverie.engines.models import LoadedModel
from reverie.serving.decoding import Sampling
from reverie.serving.slot import ModelSlot, Served

from conftest import make_workspace, start_server

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="needs the llama extra: pip install 'reverie[llama]'")
THREADS = 1  # other test runs share the cores; llama.cpp's spinning threads crawl when oversubscribed
QUESTIONS = ("Which river runs through the old town?", "Hi", "Once upon a time there was", "Velmora is",
             "What do Thrannock champions win?")


@pytest.fixture(scope="module")
def sharp_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """An F32 GGUF of the tiny model with its matrices scaled 15-fold (std 0.02 to 0.3, as tests/test_gguf.py's
    sharp model): the stock init's greedy output is one token over and over, so equal decodes would prove nothing."""
    from reverie.engines.gguf_export import write_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for parameter in (p for p in model.parameters() if p.ndim == 2):
            parameter.mul_(15)
    out = tmp_path_factory.mktemp("sharp-continuous")
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return write_gguf(out, out / "model-f32.gguf")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(sharp_gguf: Path):
    from reverie.engines.llama_cpp_runtime import LlamaCppModel

    return LlamaCppModel(sharp_gguf, n_threads=THREADS)


@pytest.fixture(scope="module")
def stock_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The stock tiny model, whose greedy decode runs on without an end of sequence."""
    from reverie.engines.gguf_export import write_gguf
    from reverie.engines.llama_cpp_runtime import LlamaCppModel

    return LlamaCppModel(write_gguf(tiny_model_dir, tmp_path_factory.mktemp("stock") / "model-f32.gguf"),
                         n_threads=THREADS)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          return_dict=True)["input_ids"] for q in QUESTIONS]


def alone(model, prompt: list[int], **kwargs) -> list[int]:
    """The new tokens of `LlamaCppModel.generate` on this one prompt, greedy unless told otherwise."""
    kwargs = {"max_new_tokens": 24, "eos_token_id": model.config.eos_token_id} | kwargs
    return model.generate(torch.tensor([prompt]), **kwargs)[0, len(prompt):].tolist()


def until_done(engine, rows) -> list:
    """Step until every row has left; their results."""
    while not all(row.result.done() for row in rows):
        engine.step()
    return [row.result.result() for row in rows]


def test_each_row_decodes_as_generate_decodes_it_alone(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch, RowRequest

    engine = ContinuousBatch(model, slots=3)
    rows = [engine.submit(RowRequest(prompts[0], 24))]
    for prompt in prompts[1:]:  # the others join one by one while the first decodes; two wait for a slot
        engine.step()
        rows.append(engine.submit(RowRequest(prompt, 24)))
    results = until_done(engine, rows)
    engine.close()
    expected = [alone(model, prompt) for prompt in prompts]
    assert [r.tokens for r in results] == expected
    assert all(len(set(tokens)) > 3 for tokens in expected)  # decodes that vary, so the match means something


def test_a_prompt_longer_than_a_steps_prefill_goes_in_over_two_steps(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import PREFILL_PER_STEP, ContinuousBatch, RowRequest

    long = (prompts[0] * 60)[: PREFILL_PER_STEP + 100]
    engine = ContinuousBatch(model, slots=2)
    short = engine.submit(RowRequest(prompts[1], 6, eos=()))
    engine.step()
    row = engine.submit(RowRequest(long, 8))
    engine.step()
    assert row.fed == PREFILL_PER_STEP and not row.tokens and len(short.tokens) == 2  # the short row went on
    engine.step()
    assert row.fed == len(long) and len(row.tokens) == 1
    (result,) = until_done(engine, [row])
    engine.close()
    assert result.joined == 1 and result.tokens == alone(model, long, max_new_tokens=8)


def test_a_request_joins_while_another_is_mid_decode(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch, RowRequest

    engine = ContinuousBatch(model, slots=2)
    first = engine.submit(RowRequest(prompts[0], 20, eos=()))  # no end of sequence: both run to max_tokens
    for _ in range(5):
        engine.step()
    assert len(first.tokens) == 5 and not first.result.done()
    second = engine.submit(RowRequest(prompts[1], 20, eos=()))
    engine.step()
    assert second.joined == 5 and len(second.tokens) == 1 and len(first.tokens) == 6  # one decode for both
    a, b = until_done(engine, [first, second])
    engine.close()
    assert (a.joined, a.finished, b.joined, b.finished) == (0, 19, 5, 24)
    assert a.finish == b.finish == "length" and b.joined < a.finished


def test_finished_and_cancelled_rows_free_their_slots(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch, RowRequest

    engine = ContinuousBatch(model, slots=2)
    rows = [engine.submit(RowRequest(prompt, 6 + 3 * n)) for n, prompt in enumerate(prompts)]
    never = engine.submit(RowRequest(prompts[0], 6))
    never.cancel()  # cancelled while it waits: it never takes a slot
    engine.step()
    engine.step()
    rows[1].cancel()  # cancelled mid-decode: it leaves at the next step and the third row takes its slot
    engine.step()
    assert rows[1].result.result().finish == "cancelled" and len(rows[1].result.result().tokens) == 2
    assert rows[2].joined == rows[1].result.result().finished == 2
    results = until_done(engine, rows + [never])
    engine.close()
    assert [r.finish for r in results] == ["length", "cancelled", "length", "length", "length", "cancelled"]
    assert results[-1].joined is None and results[-1].tokens == []
    for n, (prompt, result) in enumerate(zip(prompts, results)):
        if n != 1:
            assert result.tokens == alone(model, prompt, max_new_tokens=6 + 3 * n)
    assert engine.steps < sum(6 + 3 * n for n in range(len(prompts)))  # rows shared steps: not one after another


def test_stop_end_of_sequence_min_tokens_and_max_tokens(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch, RowRequest

    free = alone(model, prompts[0])
    end = free[3]  # taken as the end of sequence, the fourth greedy token ends the row
    engine = ContinuousBatch(model, slots=4)
    rows = [engine.submit(RowRequest(prompts[0], 24, eos=(end,))),
            engine.submit(RowRequest(prompts[0], 24, eos=(end,), min_tokens=10)),
            engine.submit(RowRequest(prompts[0], 24, stopped=lambda tokens: tokens[-2:] == free[5:7])),
            engine.submit(RowRequest(prompts[0], 3))]
    ended, forced, stopped, cut = until_done(engine, rows)
    engine.close()
    assert (ended.tokens, ended.finish) == (free[:4], "eos")
    assert forced.tokens == alone(model, prompts[0], eos_token_id=end, min_new_tokens=10)
    assert len(forced.tokens) > 10 and end not in forced.tokens[:10]
    assert (stopped.tokens, stopped.finish) == (free[:7], "stop")
    assert (cut.tokens, cut.finish) == (free[:3], "length")


def test_a_sampled_row_draws_as_generate_does_with_the_same_seed(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch, RowRequest

    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0}
    engine = ContinuousBatch(model, slots=3)
    rows = [engine.submit(RowRequest(prompts[0], 24, seed=seed, **sampling)) for seed in (7, 7, 8)]
    same, again, other = until_done(engine, rows)
    engine.close()
    assert same.tokens == again.tokens == alone(model, prompts[0], seed=7, **sampling) != other.tokens


def test_a_failing_row_fails_alone(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch, RowRequest

    def broken(tokens: list[int]) -> bool:
        if len(tokens) == 3:
            raise ValueError("stop check failed")
        return False

    engine = ContinuousBatch(model, slots=2)
    rows = [engine.submit(RowRequest(prompts[0], 12, stopped=broken)), engine.submit(RowRequest(prompts[1], 12))]
    while not all(row.result.done() for row in rows):
        engine.step()
    engine.close()
    with pytest.raises(ValueError, match="stop check failed"):
        rows[0].result.result()
    assert rows[1].result.result().tokens == alone(model, prompts[1], max_new_tokens=12)


def test_a_row_beyond_the_context_is_refused(model, prompts) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch, RowRequest
    from reverie.errors import ReverieError

    engine = ContinuousBatch(model, slots=1)
    with pytest.raises(ReverieError, match="exceed this llama.cpp model's context"):
        engine.submit(RowRequest(prompts[0], model.n_ctx))
    engine.close()


# The server's scheduler: engines in their threads, one per served model.


def served_on(model, tokenizer, model_id: str) -> Served:
    return Served(model_id, LoadedModel(model, tokenizer), 0)


def test_the_scheduler_streams_and_answers_and_follows_a_hot_switch(model, sharp_gguf, tokenizer, prompts) -> None:
    from reverie.engines.llama_cpp_runtime import LlamaCppModel
    from reverie.serving.continuous import ContinuousScheduler

    old = served_on(model, tokenizer, "m-old")
    new = served_on(LlamaCppModel(sharp_gguf, n_threads=THREADS), tokenizer, "m-new")
    slot = ModelSlot(None, old)  # no workspace: the test moves the pointer itself
    scheduler = ContinuousScheduler(slot, slots=2)
    greedy = Sampling.of(0.0, 1.0, ())
    ended = threading.Event()

    async def main() -> tuple:
        stream = scheduler.stream(old, prompts[0], 24, greedy, on_end=ended.set)
        pieces = iter(stream.pieces)
        first_piece = await asyncio.to_thread(next, pieces)  # the old model is decoding this stream
        slot.served = new  # the hot switch: what the watcher does
        answer = await scheduler.submit(new, prompts[1], 12, greedy)
        rest = await asyncio.to_thread(lambda: "".join(pieces))
        return stream, first_piece + rest, answer

    stream, streamed, answer = asyncio.run(main())
    assert ended.wait(30) and stream.model_id == "m-old"
    assert streamed == stream.outcome.result().text == tokenizer.decode(alone(model, prompts[0]),
                                                                         skip_special_tokens=True)
    assert answer.text == tokenizer.decode(alone(model, prompts[1], max_new_tokens=12), skip_special_tokens=True)
    (old_engine,), (new_engine,) = ([e for s, e in scheduler._engines.values() if s is served]
                                    for served in (old, new))
    old_engine._thread.join(30)  # retired when the new model got a request: it closes once its stream is done
    assert old_engine.closed and not new_engine.closed
    scheduler.close()


def test_a_cancelled_request_leaves_at_the_next_step_and_its_slot_serves_the_next(
        stock_model, tokenizer, prompts, monkeypatch: pytest.MonkeyPatch) -> None:
    from reverie.engines.llama_cpp_continuous import ContinuousBatch
    from reverie.serving.continuous import ContinuousScheduler

    rows: list = []
    submit = ContinuousBatch.submit
    monkeypatch.setattr(ContinuousBatch, "submit", lambda self, request: rows.append(submit(self, request)) or rows[-1])
    served = served_on(stock_model, tokenizer, "m")
    slot = ModelSlot(None, served)
    scheduler = ContinuousScheduler(slot, slots=1)
    greedy = Sampling.of(0.0, 1.0, ())

    async def main():
        long = asyncio.create_task(scheduler.submit(served, prompts[0], 900, greedy))
        while not (rows and rows[0].tokens):  # it holds the one slot and decodes
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(scheduler.submit(served, prompts[1], 5, greedy))
        with slot.lock:  # between two steps
            long.cancel()  # its client left
            await asyncio.sleep(0)
        return await waiting

    answer = asyncio.run(main())
    left = rows[0].result.result()
    assert left.finish == "cancelled" and len(left.tokens) < 900
    assert rows[1].joined == left.finished and answer.completion_tokens == 5
    scheduler.close()


def test_scheduling_continuous_on_transformers_falls_back_to_batches_once(tiny_model_dir, capsys) -> None:
    from reverie.config import ModelConfig
    from reverie.engines.models import load_pretrained
    from reverie.serving.continuous import Scheduling

    served = Served("m-hf", load_pretrained(tiny_model_dir, ModelConfig()), 0)
    scheduling = Scheduling("continuous", 8)
    assert not scheduling.continuous(served) and not scheduling.continuous(served)
    said = " ".join(capsys.readouterr().err.split())  # status lines go to stderr, folded at 200 columns
    assert said.count("serving it in batches") == 1 and "m-hf" in said


def test_a_plain_request_whose_client_leaves_is_cancelled() -> None:
    from reverie.serving.app import unless_client_leaves
    from reverie.serving.errors import ApiError

    class Client:  # the ASGI receive after the body: the disconnect, once the client goes
        def __init__(self) -> None:
            self.gone = asyncio.Event()

        async def receive(self) -> dict:
            await self.gone.wait()
            return {"type": "http.disconnect"}

    async def main() -> tuple[asyncio.Future, list]:
        client, work = Client(), asyncio.ensure_future(asyncio.sleep(3600))
        waiting = asyncio.create_task(unless_client_leaves(client, work))
        await asyncio.sleep(0)
        client.gone.set()
        with pytest.raises(ApiError, match="closed the request"):
            await waiting
        answered = await unless_client_leaves(Client(), asyncio.ensure_future(asyncio.sleep(0, ["answer"])))
        return work, answered

    work, answered = asyncio.run(main())
    assert work.cancelled() and answered == ["answer"]


def llama_cpp_workspace(root: Path, tiny_model_dir: Path, **serve) -> Path:
    return make_workspace(root, tiny_model_dir, model={"runtime": "llama.cpp"},
                          serve={"retrieval": False, "max_tokens": 16} | serve)


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
                                        ("/v1/completions", {"prompt": "Once upon"})])
def test_a_failed_decode_is_the_same_error_in_both_forms_and_the_next_request_is_answered(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, path: str, body: dict) -> None:
    from fastapi.testclient import TestClient

    from reverie.cycle import ensure_release
    from reverie.serving.app import create_app
    from reverie.serving.slot import load_for_serving
    from reverie.workspace import Workspace

    workspace = Workspace.open(llama_cpp_workspace(tmp_path / "ws", tiny_model_dir))
    served = load_for_serving(workspace, workspace.registry.get_model(ensure_release(workspace)))
    decode, failures = served.loaded.model.decode, [2]

    def failing_twice(*args) -> None:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("llama_decode failed with code -3")
        decode(*args)

    monkeypatch.setattr(served.loaded.model, "decode", failing_twice)
    with TestClient(create_app(workspace, served, None), raise_server_exceptions=False) as client:
        plain = client.post(path, json=body)
        stream = client.post(path, json=body | {"stream": True})
        after = client.post(path, json=body | {"max_tokens": 3})
    assert plain.status_code == 500 and plain.json()["error"]["type"] == "server_error"
    assert stream.status_code == 500 and stream.json() == plain.json()  # said before the stream, not as 200
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 3


# `reverie serve` on loopback, model.runtime llama.cpp.


def test_a_llama_cpp_server_answers_concurrent_clients_streamed_and_not(tmp_path: Path, tiny_model_dir: Path) -> None:
    url, process = start_server(llama_cpp_workspace(tmp_path / "ws", tiny_model_dir, batch_size=3))
    questions = [f"Tell me about {thing}" for thing in ("rivers", "towns", "cups", "tea", "ships", "rain")]

    def ask(question: str, stream: bool, max_tokens: int) -> str:
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
        if not stream:
            response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["message"]["content"]
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body | {"stream": True}, timeout=120) as reply:
            assert reply.status_code == 200
            events = [line.removeprefix("data: ") for line in reply.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])

    def left_mid_stream() -> None:  # a client that goes after two chunks
        body = {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 16, "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as reply:
            for n, _ in enumerate(reply.iter_lines()):
                if n == 2:
                    break

    try:
        expected = {(q, k): ask(q, False, k) for q in questions for k in (4, 16)}  # one at a time
        answers: dict = {}
        threads = [threading.Thread(target=lambda q=q, k=k, s=s: answers.__setitem__((q, k, s), ask(q, s, k)))
                   for q in questions for k in (4, 16) for s in (False, True)]
        threads.append(threading.Thread(target=left_mid_stream))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = ask(questions[0], True, 16)  # the server still answers once the rush is over
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert len(answers) == 4 * len(questions)  # every client got its answer
    assert all(text == expected[q, k] for (q, k, _), text in answers.items())
    assert after == expected[questions[0], 16]
    assert "scheduled continuously" in process.stdout.read()
