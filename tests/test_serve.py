"""The server, run the way a user runs it: `reverie serve` on loopback, real HTTP, a tiny model."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from reverie.config import ModelConfig
from reverie.cycle import ensure_release
from reverie.data.splits import knowledge_held_out
from reverie.engines.models import load_pretrained
from reverie.memory.store import current_knowledge
from reverie.serving.app import create_app
from reverie.serving.batcher import Admission, Overloaded
from reverie.serving.decoding import Sampling, until_stop
from reverie.serving.slot import ModelSlot, Served, load_for_serving
from reverie.serving.streaming import stream_text
from reverie.workspace import Workspace

from conftest import chat, reverie, start_server


def test_openai_endpoints_answer_with_the_release(server, workspace_dir: Path) -> None:
    url, _ = server
    release = Workspace.open(workspace_dir).registry.get_alias()
    models = httpx.get(f"{url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["reverie", release]
    answer = chat(url, "Hello there").json()
    assert answer["model"] == release and answer["object"] == "chat.completion"
    # greedy on the tiny model runs past these budgets, so each answer is cut at its max_tokens
    assert (answer["usage"]["completion_tokens"], answer["choices"][0]["finish_reason"]) == (8, "length")
    completion = httpx.post(f"{url}/v1/completions", json={"prompt": "Once upon", "max_tokens": 5}, timeout=60).json()
    assert completion["object"] == "text_completion"
    assert (completion["usage"]["completion_tokens"], completion["choices"][0]["finish_reason"]) == (5, "length")
    capped = httpx.post(f"{url}/v1/completions", json={"prompt": "a", "max_tokens": 100000}, timeout=60).json()
    assert capped["usage"]["completion_tokens"] <= Workspace.open(workspace_dir).config.serve.max_tokens


def test_streaming_sends_chunks_then_done(server) -> None:
    url, _ = server
    body = {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 12, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # greedy on the tiny model runs past 12 tokens
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_bad_requests_get_clear_errors(shared_server: str) -> None:
    url = shared_server
    invalid = chat(url, "x", temperature=9)
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "temperature"  # as OpenAI answers
    huge = "word " * 20000
    response = httpx.post(f"{url}/v1/completions", json={"prompt": huge}, timeout=60)
    assert response.status_code == 413 and "serve.max_request_bytes" in response.json()["error"]["message"]


@pytest.mark.serve_args("--api-key", "s3cret")
def test_api_key_guards_every_endpoint_but_health(server) -> None:
    url, _ = server
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert chat(url, "hi").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(f"{url}/v1/models?key=s3cret").status_code == 401  # the API takes the header only
    for page in ("/", "/api/overview", "/charts/trends.png"):  # the page and its images, where no header can go
        assert httpx.get(f"{url}{page}?key=s3cret", timeout=30).status_code == 200, page
    assert httpx.get(f"{url}/api/overview?key=wrong").status_code == 401
    assert httpx.post(f"{url}/v1/chat/completions?key=s3cret", json={"messages": []}).status_code == 401
    missing = httpx.get(f"{url}/openapi.json?key=s3cret")  # no pages outside the key
    assert missing.status_code == 404 and "error" in missing.json()


def test_beyond_loopback_without_a_key_is_refused(workspace_dir: Path) -> None:
    result = reverie("serve", "-w", str(workspace_dir), "--host", "0.0.0.0", check=False)
    assert result.returncode == 2 and "set an API key" in result.stderr


@pytest.mark.serve_args("--set", "serve.max_queue=1", "--set", "serve.batch_wait_ms=1000")
def test_a_full_queue_answers_503_at_once(server) -> None:
    url, _ = server
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(chat(url, "first")))
    thread.start()
    time.sleep(0.3)  # the first request waits a second in the batcher for company
    started = time.perf_counter()
    second = chat(url, "second")
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert time.perf_counter() - started < 0.6  # refused at once, not after the first finished
    thread.join()
    assert first[0].status_code == 200


def test_a_cancelled_stream_stops_generating_and_gives_its_place_back(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    slot = ModelSlot(None, Served("m", loaded, 0))  # no workspace: nothing here follows a release pointer
    prompt = loaded.tokenizer("Velmora is")["input_ids"]

    def pieces_until_the_end(cancel_after: int | None) -> int:
        ended = threading.Event()
        stream = stream_text(slot, slot.served, prompt, 500, Sampling.of(0.0, 1.0, ()), on_end=ended.set)
        read = 0
        for _ in stream.pieces:
            read += 1
            if read == cancel_after:
                stream.cancel.set()
        assert ended.wait(30)  # on_end (the admission release) runs when generation ends
        return read

    whole = pieces_until_the_end(None)
    assert whole > 100  # greedy on this model runs long: a stop below is the cancel's doing
    assert pieces_until_the_end(cancel_after=3) < 10


def test_hot_switch_and_rollback_under_load_fail_no_request(workspace_dir: Path) -> None:
    ws = str(workspace_dir)
    reverie("cycle", "-w", ws, "--set", "dream.enabled=false")
    registry = Workspace.open(workspace_dir).registry
    released, base = registry.get_alias(), registry.release_events()[0].model_id
    url, process = start_server(workspace_dir, "--set", "serve.poll_seconds=0.2")
    try:
        results: list[tuple[int, str]] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                response = chat(url, "hello")
                results.append((response.status_code, response.json().get("model", "")))

        clients = [threading.Thread(target=client) for _ in range(3)]
        for thread in clients:
            thread.start()
        time.sleep(1.5)
        reverie("rollback", "-w", ws)  # release -> base while requests are in flight
        time.sleep(3)
        stop.set()
        for thread in clients:
            thread.join()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert results and all(status == 200 for status, _ in results)
    served = [model for _, model in results]
    assert served[0] == released and served[-1] == base


def test_a_thumbs_down_reaches_the_next_cycles_replay_and_lineage(server, workspace_dir: Path) -> None:
    url, process = server
    answer = chat(url, "What is the capital of Velmora?").json()
    stored = httpx.post(f"{url}/v1/feedback", timeout=30, json={
        "id": answer["id"], "rating": "down", "correction": "The capital of Velmora is Quistrand."})
    assert stored.status_code == 200
    assert httpx.post(f"{url}/v1/feedback", json={"id": "nope", "rating": "up"}, timeout=30).status_code == 400
    httpx.post(f"{url}/v1/feedback", json={"prompt": "2+2?", "answer": "5", "rating": "down"}, timeout=30)
    _, held_out = knowledge_held_out(current_knowledge(Workspace.open(workspace_dir)))[0]
    httpx.post(f"{url}/v1/feedback", timeout=30, json={
        "prompt": held_out.question, "answer": "?", "rating": "down", "correction": held_out.answer})
    process.terminate()
    process.wait(timeout=30)

    ws = str(workspace_dir)
    reverie("cycle", "-w", ws, "--set", "dream.enabled=false", "--set", "learn.replay_share=0.5")
    workspace = Workspace.open(workspace_dir)
    (feedback,) = workspace.registry.list_datasets(kind="feedback")
    examples = (workspace.artifacts.path(feedback.hash) / "examples.jsonl").read_text()
    assert "Quistrand" in examples and "What is the capital of Velmora?" in examples
    rejected = (workspace.artifacts.path(feedback.hash) / "rejected.jsonl").read_text()
    assert "without a correction" in rejected  # the thumbs-down with nothing to train towards is kept, not lost
    assert "overlap evaluation item" in rejected and held_out.question not in examples  # the Gate's test is not taught
    assert feedback.name in reverie("lineage", "release", "-w", ws).stdout
    reverie("cycle", "-w", ws, "--set", "dream.enabled=false")
    assert len(workspace.registry.list_datasets(kind="feedback")) == 1  # used once


def test_a_release_that_fails_to_load_leaves_the_old_one_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    import reverie.serving.slot as slot_module

    class Registry:  # just the release pointer the watcher polls
        alias = "m-broken"

        def get_alias(self) -> str:
            return self.alias

        def get_model(self, model_id: str) -> SimpleNamespace:
            return SimpleNamespace(id=model_id)

    loads: list[str] = []

    def load(workspace, record) -> Served:
        loads.append(record.id)
        if record.id == "m-broken":
            raise OSError("adapter artifact missing")
        return Served(record.id, None, 0)

    monkeypatch.setattr(slot_module, "load_for_serving", load)
    workspace = SimpleNamespace(registry=Registry())
    slot = ModelSlot(workspace, Served("m-old", None, 0))

    async def follow() -> None:
        watcher = asyncio.create_task(slot.watch(0.01))
        await asyncio.sleep(0.2)
        assert slot.served.model_id == "m-old"  # still serving what it had
        workspace.registry.alias = "m-fixed"  # the next release still gets followed
        await asyncio.sleep(0.2)
        watcher.cancel()

    asyncio.run(follow())
    assert slot.served.model_id == "m-fixed" and loads.count("m-broken") == 1  # tried once, not every poll


# The OpenAI contract, hardened (issue 13): one server on a workspace without retrieval, answers of 16 tokens.


@pytest.fixture(scope="module")
def shared_server(serving_workspace_dir: Path) -> Iterator[str]:
    """One server for the tests below, which only ask it things: starting one is seconds."""
    url, process = start_server(serving_workspace_dir)
    yield url
    process.terminate()
    process.wait(timeout=30)


def post(url: str, path: str, body: dict | None = None, content: str | None = None,
         content_type: str = "application/json") -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, content=content, timeout=60,
                      headers={"Content-Type": content_type} if content is not None else None)


def streamed(url: str, path: str, body: dict) -> tuple[httpx.Response, list]:
    """The response and its events (the JSON ones parsed; "[DONE]" as is) of a streamed request."""
    with httpx.stream("POST", f"{url}{path}", json=body | {"stream": True}, timeout=60) as response:
        response.read()
    if not response.headers["content-type"].startswith("text/event-stream"):
        return response, []
    data = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    return response, [e if e == "[DONE]" else json.loads(e) for e in data]


def streamed_text(chunks: list) -> str:
    return "".join(c["choices"][0].get("text") or c["choices"][0].get("delta", {}).get("content") or ""
                   for c in chunks if isinstance(c, dict) and c["choices"])


def is_openai_error(response: httpx.Response) -> bool:
    error = response.json().get("error")
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


CHAT = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me a story"}]})
COMPLETION = ("/v1/completions", {"prompt": "Once upon"})


def test_a_stop_sequence_split_across_streamed_pieces_is_held_back_then_cut() -> None:
    pieces = list(until_stop(["Once up", "on a t", "ime up", "on"], ("a ti", "upon")))
    assert "".join(pieces) == "Once " and pieces[0] == "Once "  # "up" waited: it could have begun "upon"
    assert "".join(until_stop(["a t", "ea", " t"], ("a ti",))) == "a tea t"  # held back, then let go


def answer_text(answer: dict) -> str:
    choice = answer["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


@pytest.mark.parametrize("path, body", [CHAT, COMPLETION])
def test_a_temperature_next_to_zero_decodes_greedily_in_both_forms(shared_server: str, path: str, body: dict) -> None:
    greedy = answer_text(post(shared_server, path, body | {"temperature": 0}).json())
    tiny = post(shared_server, path, body | {"temperature": 1e-45})  # logits / 1e-45 once made NaN probabilities
    assert tiny.status_code == 200 and answer_text(tiny.json()) == greedy != ""
    response, chunks = streamed(shared_server, path, body | {"temperature": 1e-45})
    assert response.status_code == 200 and streamed_text(chunks) == greedy


def test_an_empty_prompt_is_refused_before_any_stream(shared_server: str) -> None:
    plain = post(shared_server, "/v1/completions", {"prompt": ""})
    assert plain.status_code == 400 and is_openai_error(plain) and plain.json()["error"]["param"] == "prompt"
    response, chunks = streamed(shared_server, "/v1/completions", {"prompt": ""})
    assert response.status_code == 400 and chunks == [] and is_openai_error(response)  # refused, not streamed
    listed = post(shared_server, "/v1/completions", {"prompt": ["Once", ""]})
    assert listed.status_code == 400 and "prompt 1" in listed.json()["error"]["message"]


@pytest.mark.parametrize("path, body", [CHAT, COMPLETION])
def test_a_stream_says_length_when_the_plain_answer_does(shared_server: str, path: str, body: dict) -> None:
    plain = post(shared_server, path, body | {"max_tokens": 3}).json()
    assert plain["choices"][0]["finish_reason"] == "length"  # greedy on the tiny model runs long
    _, chunks = streamed(shared_server, path, body | {"max_tokens": 3})
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if isinstance(c, dict)]
    assert finishes[-1] == "length" and not any(finishes[:-1])


def test_n_choices_are_generated_bounded_and_never_silently_dropped(shared_server: str) -> None:
    path, body = CHAT
    sampled = post(shared_server, path, body | {"n": 3, "temperature": 1.0, "max_tokens": 8}).json()
    texts = [c["message"]["content"] for c in sampled["choices"]]
    assert [c["index"] for c in sampled["choices"]] == [0, 1, 2] and len(set(texts)) > 1  # three samples
    assert sampled["usage"]["completion_tokens"] > 8  # counted over the choices
    listed = post(shared_server, "/v1/completions", {"prompt": ["Once", "upon"], "n": 2, "max_tokens": 2}).json()
    assert [c["index"] for c in listed["choices"]] == [0, 1, 2, 3]
    too_many = post(shared_server, path, body | {"n": 9})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
    response, chunks = streamed(shared_server, path, body | {"n": 2})
    assert response.status_code == 400 and chunks == [] and "one choice" in response.json()["error"]["message"]


@pytest.mark.parametrize("path, body", [CHAT, COMPLETION])
def test_include_usage_ends_a_stream_with_the_usage(shared_server: str, path: str, body: dict) -> None:
    plain = post(shared_server, path, body | {"max_tokens": 5}).json()
    _, chunks = streamed(shared_server, path, body | {"max_tokens": 5, "stream_options": {"include_usage": True}})
    *content, last, done = chunks
    assert done == "[DONE]" and last["choices"] == [] and last["usage"] == plain["usage"]
    assert all(c["usage"] is None for c in content)
    _, without = streamed(shared_server, path, body | {"max_tokens": 5})
    assert all("usage" not in c for c in without[:-1])


def test_text_parts_and_the_developer_role_are_read_like_strings(shared_server: str) -> None:
    def ask(messages: list[dict]) -> dict:
        response = post(shared_server, "/v1/chat/completions", {"messages": messages, "max_tokens": 6})
        assert response.status_code == 200, response.text
        return response.json()

    strings = ask([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello\nthere"}])
    parts = ask([{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                 {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}])
    assert parts["usage"] == strings["usage"] and parts["choices"][0]["message"] == strings["choices"][0]["message"]
    image = post(shared_server, "/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]})
    assert image.status_code == 400 and "'image_url'" in image.json()["error"]["message"]
    tool = post(shared_server, "/v1/chat/completions", {"messages": [{"role": "tool", "content": "42"}]})
    assert tool.status_code == 400 and "'tool'" in tool.json()["error"]["message"]


def test_models_say_when_they_were_created(shared_server: str, serving_workspace_dir: Path) -> None:
    registry = Workspace.open(serving_workspace_dir).registry
    created = int(registry.get_model(registry.get_alias()).created_at)
    models = httpx.get(f"{shared_server}/v1/models").json()["data"]
    assert [m["created"] for m in models] == [created, created] and created > 1_600_000_000


SURROGATE = '"\\ud800"'  # JSON text for a lone surrogate: valid JSON, not valid Unicode


@pytest.mark.parametrize("path, raw, field", [
    ("/v1/chat/completions", f'{{"messages": [{{"role": "user", "content": {SURROGATE}}}]}}', "messages.0.content"),
    ("/v1/chat/completions",
     f'{{"messages": [{{"role": "user", "content": [{{"type": "text", "text": {SURROGATE}}}]}}]}}',
     "messages.0.content.0.text"),
    ("/v1/chat/completions", f'{{"model": {SURROGATE}, "messages": [{{"role": "user", "content": "hi"}}]}}', "model"),
    ("/v1/completions", f'{{"prompt": {SURROGATE}}}', "prompt"),
    ("/v1/completions", f'{{"prompt": ["ok", {SURROGATE}]}}', "prompt.1"),
    ("/v1/completions", f'{{"prompt": "ok", "stop": {SURROGATE}}}', "stop"),
    ("/v1/completions", f'{{"prompt": "ok", "stream": true, "stop": [{SURROGATE}]}}', "stop.0"),
    ("/v1/feedback", f'{{"prompt": {SURROGATE}, "answer": "a", "rating": "down"}}', "prompt"),
    ("/v1/feedback", f'{{"prompt": "p", "answer": "a", "rating": "down", "correction": {SURROGATE}}}', "correction"),
    ("/v1/memory", f'{{"title": {SURROGATE}, "text": "some text"}}', "title"),
])
def test_a_lone_surrogate_is_refused_naming_the_field(shared_server: str, path: str, raw: str, field: str) -> None:
    response = post(shared_server, path, content=raw)
    expected = 400 if path in ("/v1/chat/completions", "/v1/completions") else 422  # OpenAI's, reverie's own
    assert response.status_code == expected and is_openai_error(response)
    assert response.json()["error"]["param"] == field and "surrogate" in response.json()["error"]["message"]


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "a\u0000b\u2028c\u2029d\u0085e"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\u0000b\u2028c\u2029d\u0085e"}]}),
])
def test_nul_and_unicode_line_separators_are_ordinary_text(shared_server: str, path: str, body: dict) -> None:
    assert post(shared_server, path, body | {"max_tokens": 4}).status_code == 200
    response, chunks = streamed(shared_server, path, body | {"max_tokens": 4})
    assert response.status_code == 200 and chunks[-1] == "[DONE]"


CHAT_BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize("raw, content_type, status, param", [
    (json.dumps(CHAT_BODY | {"max_tokens": 0}), "application/json", 400, "max_tokens"),
    (json.dumps(CHAT_BODY | {"max_tokens": -5}), "application/json", 400, "max_tokens"),
    (json.dumps(CHAT_BODY | {"temperature": -0.1}), "application/json", 400, "temperature"),
    (json.dumps(CHAT_BODY | {"temperature": 2.01}), "application/json", 400, "temperature"),
    (json.dumps(CHAT_BODY)[:-1] + ', "temperature": NaN}', "application/json", 400, "temperature"),  # Python's
    (json.dumps(CHAT_BODY)[:-1] + ', "temperature": Infinity}', "application/json", 400, "temperature"),  # json
    (json.dumps(CHAT_BODY | {"top_p": 1.5}), "application/json", 400, "top_p"),
    (json.dumps(CHAT_BODY | {"n": 10**6}), "application/json", 400, "n"),
    (json.dumps(CHAT_BODY | {"stop": ["a", "b", "c", "d", "e"]}), "application/json", 400, "stop"),
    (json.dumps(CHAT_BODY | {"messages": []}), "application/json", 400, "messages"),
    (json.dumps(CHAT_BODY | {"messages": [{"role": "user"}]}), "application/json", 400, "messages.0.content"),
    (json.dumps(CHAT_BODY | {"model": "gpt-4o"}), "application/json", 404, "model"),
    ("{not json", "application/json", 400, None),
    ("[1, 2]", "application/json", 400, None),
    (json.dumps(CHAT_BODY), "text/plain", 400, None),
    ("", "application/json", 400, None),
])
def test_malformed_chat_requests_get_openai_errors(shared_server: str, raw: str, content_type: str, status: int,
                                                   param: str | None) -> None:
    response = post(shared_server, "/v1/chat/completions", content=raw, content_type=content_type)
    assert response.status_code == status and is_openai_error(response), response.text
    assert response.json()["error"]["param"] == param
    if status == 404:
        assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("path, body", [CHAT, COMPLETION])
def test_a_stop_sequence_ends_the_answer_in_both_forms(shared_server: str, path: str, body: dict) -> None:
    whole = answer_text(post(shared_server, path, body | {"max_tokens": 12}).json())
    stop = whole[1:3]
    expected = whole[: whole.index(stop)]  # "ononon…" ends at "o"; the chat's "\n\n\n…" ends at once
    cut = post(shared_server, path, body | {"max_tokens": 12, "stop": [stop, "never said"]}).json()
    assert answer_text(cut) == expected and cut["choices"][0]["finish_reason"] == "stop"
    _, chunks = streamed(shared_server, path, body | {"max_tokens": 12, "stop": stop})
    assert streamed_text(chunks) == expected and chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_top_p_near_zero_keeps_only_the_likeliest_token(shared_server: str) -> None:
    path, body = COMPLETION
    greedy = answer_text(post(shared_server, path, body | {"max_tokens": 12}).json())
    sampled = answer_text(post(shared_server, path, body | {"max_tokens": 12, "temperature": 1.5}).json())
    nucleus = post(shared_server, path, body | {"max_tokens": 12, "temperature": 1.5, "top_p": 1e-9}).json()
    assert answer_text(nucleus) == greedy != sampled


def test_max_completion_tokens_is_read_as_max_tokens(shared_server: str) -> None:
    path, body = CHAT
    answer = post(shared_server, path, body | {"max_completion_tokens": 2}).json()
    assert answer["usage"]["completion_tokens"] == 2 and answer["choices"][0]["finish_reason"] == "length"


def test_an_unasked_budget_is_what_the_context_leaves(shared_server: str, tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tokenizer.decode(tokenizer("Once upon a time " * 400)["input_ids"][:1020])  # the context is 1024
    room = 1024 - len(tokenizer(prompt)["input_ids"])
    answer = post(shared_server, "/v1/completions", {"prompt": prompt}).json()
    assert 0 < answer["usage"]["completion_tokens"] == room < 16  # not refused for a serve.max_tokens never asked
    asked = post(shared_server, "/v1/completions", {"prompt": prompt, "max_tokens": 16})
    assert asked.status_code == 400 and asked.json()["error"]["code"] == "context_length_exceeded"


def in_process_app(workspace_dir: Path, *overrides: str) -> tuple[TestClient, Served]:
    """The app in this process (served model at hand, to break on purpose); `with` the client runs it."""
    workspace = Workspace.open(workspace_dir, list(overrides))
    served = load_for_serving(workspace, workspace.registry.get_model(ensure_release(workspace)))
    return TestClient(create_app(workspace, served, None), raise_server_exceptions=False), served


@pytest.mark.parametrize("path, body", [CHAT, COMPLETION])
def test_a_failure_before_the_first_token_is_the_same_error_in_both_forms(
        serving_workspace_dir: Path, monkeypatch: pytest.MonkeyPatch, path: str, body: dict) -> None:
    client, served = in_process_app(serving_workspace_dir)

    def broken(**kwargs: object) -> None:
        raise RuntimeError("probability tensor contains either inf, nan or element < 0")

    monkeypatch.setattr(served.loaded.model, "generate", broken)
    with client:
        plain = client.post(path, json=body)
        stream = client.post(path, json=body | {"stream": True})
    assert plain.status_code == 500 and plain.json()["error"]["type"] == "server_error"
    assert stream.status_code == 500 and stream.json() == plain.json()  # said before the stream, not as 200


def test_a_failure_mid_stream_ends_it_with_an_error_event(serving_workspace_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    client, served = in_process_app(serving_workspace_dir)

    def fails_after_a_token(**kwargs) -> None:
        kwargs["streamer"].put(kwargs["input_ids"])
        kwargs["streamer"].put(torch.tensor([42]))
        raise RuntimeError("out of memory")

    monkeypatch.setattr(served.loaded.model, "generate", fails_after_a_token)
    with client:
        response = client.post("/v1/completions", json={"prompt": "Once upon", "stream": True})
    events = [json.loads(line.removeprefix("data: ")) for line in response.text.splitlines() if line.startswith("data")]
    assert response.status_code == 200 and events[-1]["error"]["type"] == "server_error"
    assert not any(e.get("choices", [{}])[0].get("finish_reason") for e in events[:-1])  # no false "stop"


def test_choices_count_against_the_queue(serving_workspace_dir: Path) -> None:
    client, _ = in_process_app(serving_workspace_dir, "serve.max_queue=2")
    with client:
        response = client.post("/v1/completions", json={"prompt": "Once", "n": 3, "max_tokens": 2})
    assert response.status_code == 400 and "serve.max_queue" in response.json()["error"]["message"]
    admission = Admission(3)
    admission.acquire(2)
    with pytest.raises(Overloaded):
        admission.acquire(2)  # all of a request's choices or none
    admission.release(2)
    admission.acquire(3)


def test_greedy_choices_are_generated_once(serving_workspace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, served = in_process_app(serving_workspace_dir)
    calls: list[int] = []
    generate = served.loaded.model.generate

    def counted(**kwargs: object) -> torch.Tensor:
        calls.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    monkeypatch.setattr(served.loaded.model, "generate", counted)
    with client:
        greedy = client.post("/v1/completions", json={"prompt": "Once", "n": 3, "max_tokens": 3}).json()
        sampled = client.post("/v1/completions", json={"prompt": "Once", "n": 3, "max_tokens": 3,
                                                        "temperature": 1.0}).json()
    assert len({c["text"] for c in greedy["choices"]}) == 1 and len(greedy["choices"]) == 3
    assert calls[0] == 1 and sum(calls[1:]) == 3  # one row for the greedy three, three rows when sampled
    assert greedy["usage"]["completion_tokens"] == 3 * 3 and len(sampled["choices"]) == 3


def test_the_batcher_skips_a_job_whose_client_left(monkeypatch: pytest.MonkeyPatch) -> None:
    from reverie.serving import batcher
    from reverie.serving.decoding import Answer

    generated: list[list[int]] = []

    def fake_batch(slot: object, jobs: list) -> list[Answer]:
        generated.extend(job.prompt_ids for job in jobs)
        return [Answer("x", 1, "stop") for _ in jobs]

    monkeypatch.setattr(batcher, "generate_batch", fake_batch)

    async def main() -> Answer:
        queue = batcher.Batcher(slot=None, batch_size=8, wait_ms=200)
        runner = asyncio.create_task(queue.run())
        sampling, served = Sampling.of(0.0, 1.0, ()), object()
        left = asyncio.create_task(queue.submit(served, [1], 2, sampling))
        stays = asyncio.create_task(queue.submit(served, [2], 2, sampling))
        await asyncio.sleep(0.01)  # both are queued; the batch is still gathering
        left.cancel()
        answer = await stays
        runner.cancel()
        return answer

    assert asyncio.run(main()).text == "x"
    assert generated == [[2]]
