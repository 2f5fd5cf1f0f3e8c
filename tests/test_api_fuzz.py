"""Property-based fuzzing of every route, in-process, on the app's own OpenAPI schema (schemathesis): no input
gets a 500, and every refusal is in OpenAI's error shape. Answers are capped at 4 tokens of the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from reverie.cycle import ensure_release
from reverie.serving.app import create_app
from reverie.serving.slot import load_for_serving
from reverie.workspace import Workspace

ROUTES = [("/health", "GET"), ("/", "GET"), ("/api/overview", "GET"), ("/charts/trends.png", "GET"),
          ("/charts/pareto.png", "GET"), ("/v1/models", "GET"), ("/v1/chat/completions", "POST"),
          ("/v1/completions", "POST"), ("/v1/memory", "POST"), ("/v1/feedback", "POST"), ("/v1/canary", "GET")]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def schema(serving_workspace_dir: Path) -> schemathesis.BaseSchema:
    """The app's schema, built in this process only (the served app publishes none), bound to the app."""
    setup = Workspace.open(serving_workspace_dir, ["serve.max_tokens=4"])
    served = load_for_serving(setup, setup.registry.get_model(ensure_release(setup)))
    # A fresh Workspace: its SQLite registry opens on the app's event-loop thread, as under `reverie serve`.
    app = create_app(Workspace.open(serving_workspace_dir, ["serve.max_tokens=4"]), served, None)
    loaded = schemathesis.openapi.from_dict(app.openapi())
    loaded.app = app
    return loaded


def check(response: schemathesis.Response) -> None:
    """Below 500; a refusal is `{"error": {"message": str, "type": str, …}}`; a stream carries no error event."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = json.loads(response.text).get("error")
        assert isinstance(error, dict) and isinstance(error.get("message"), str), response.text
        assert isinstance(error.get("type"), str), response.text
    elif response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and not any("error" in json.loads(e) for e in events[:-1]), response.text


def test_every_route_is_fuzzed(schema: schemathesis.BaseSchema) -> None:
    assert sorted((path, method.upper()) for path, methods in schema.raw_schema["paths"].items()
                  for method in methods) == sorted(ROUTES)


@pytest.mark.parametrize("path, method", ROUTES)
def test_valid_requests_get_an_answer_or_an_openai_error(schema: schemathesis.BaseSchema, path: str,
                                                          method: str) -> None:
    @FUZZ
    @given(case=schema[path][method].as_strategy(GenerationMode.POSITIVE), served_model=st.booleans())
    def run(case: schemathesis.Case, served_model: bool) -> None:
        if served_model and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = "reverie"  # otherwise nearly every generated model name is a 404
        check(case.call())

    run()


@pytest.mark.parametrize("path", [path for path, method in ROUTES if method == "POST"])
def test_invalid_bodies_get_an_openai_error(schema: schemathesis.BaseSchema, path: str) -> None:
    @FUZZ
    @given(case=schema[path]["POST"].as_strategy(GenerationMode.NEGATIVE))
    def run(case: schemathesis.Case) -> None:
        check(case.call())

    run()


CHAT, COMPLETE = "/v1/chat/completions", "/v1/completions"
ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
SURROGATE = "\ud800"


def edge(name: str, path: str, body: dict | str, status: int) -> object:
    return pytest.param(path, body, status, id=name)


EDGE_BODIES = [  # a str body is sent as it is, with Content-Type: application/json
    edge("temperature 1e-45", CHAT, ASK | {"temperature": 1e-45}, 200),
    edge("temperature 1e-45 streamed", CHAT, ASK | {"temperature": 1e-45, "stream": True}, 200),
    edge("temperature NaN", CHAT, json.dumps(ASK)[:-1] + ', "temperature": NaN}', 400),
    edge("temperature -Infinity", CHAT, json.dumps(ASK)[:-1] + ', "temperature": -Infinity}', 400),
    edge("temperature -1", CHAT, ASK | {"temperature": -1}, 400),
    edge("temperature 3", CHAT, ASK | {"temperature": 3}, 400),
    edge("top_p 0", CHAT, ASK | {"top_p": 0, "temperature": 1}, 200),
    edge("max_tokens 0", CHAT, ASK | {"max_tokens": 0}, 400),
    edge("max_tokens -1", CHAT, ASK | {"max_tokens": -1}, 400),
    edge("max_tokens 1e30", CHAT, ASK | {"max_tokens": 10**30}, 200),
    edge("n 3", CHAT, ASK | {"n": 3, "temperature": 1}, 200),
    edge("n 1e9", CHAT, ASK | {"n": 10**9}, 400),
    edge("n 2 streamed", CHAT, ASK | {"n": 2, "stream": True}, 400),
    edge("include_usage", CHAT, ASK | {"stream": True, "stream_options": {"include_usage": True}}, 200),
    edge("four stops streamed", CHAT, ASK | {"stop": ["\n", "a", "b", "c"], "stream": True}, 200),
    edge("empty stops", CHAT, ASK | {"stop": ["", ""]}, 200),
    edge("ignored OpenAI fields", CHAT, ASK | {"seed": 7, "presence_penalty": 1, "logprobs": True, "tools": []}, 200),
    edge("unknown model", CHAT, ASK | {"model": "gpt-4o"}, 404),
    edge("model surrogate", CHAT, ASK | {"model": SURROGATE}, 400),
    edge("no messages", CHAT, ASK | {"messages": []}, 400),
    edge("developer with parts", CHAT, ASK | {"messages": [{"role": "developer", "content": [{"type": "text"}]}]}, 200),
    edge("image part", CHAT, ASK | {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400),
    edge("tool role", CHAT, ASK | {"messages": [{"role": "tool", "content": "42", "tool_call_id": "1"}]}, 400),
    edge("content surrogate", CHAT, ASK | {"messages": [{"role": "user", "content": SURROGATE}]}, 400),
    edge("NUL and line separators", CHAT, ASK | {"messages": [{"role": "user", "content": "\x00\u2028\u2029\u0085"}]}, 200),
    edge("not JSON", CHAT, "{not json", 400),
    edge("JSON array", CHAT, "[1, 2]", 400),
    edge("empty body", CHAT, "", 400),
    edge("empty prompt", COMPLETE, {"prompt": ""}, 400),
    edge("empty prompt streamed", COMPLETE, {"prompt": "", "stream": True}, 400),
    edge("an empty prompt of two", COMPLETE, {"prompt": ["a", ""]}, 400),
    edge("nine prompts", COMPLETE, {"prompt": ["a"] * 9}, 400),
    edge("token ids", COMPLETE, {"prompt": [1, 2, 3]}, 400),
    edge("prompt surrogate streamed", COMPLETE, {"prompt": SURROGATE, "stream": True}, 400),
    edge("NUL and line separators streamed", COMPLETE, {"prompt": "\x00\u2028\u2029\u0085", "stream": True}, 200),
    edge("stop surrogate", COMPLETE, {"prompt": "Once", "stop": SURROGATE}, 400),
    edge("feedback surrogate", "/v1/feedback", {"prompt": SURROGATE, "answer": "a", "rating": "down"}, 422),
    edge("feedback without answer", "/v1/feedback", {"rating": "up"}, 400),
    edge("feedback empty", "/v1/feedback", {}, 422),
    edge("memory title surrogate", "/v1/memory", {"title": SURROGATE, "text": "t"}, 422),
    edge("memory question surrogate", "/v1/memory",
         {"title": "t", "text": "t", "questions": [{"question": SURROGATE, "answer": "a"}]}, 422),
]


@pytest.mark.parametrize("path, body, status", EDGE_BODIES)
def test_edge_bodies_get_their_answer_or_openai_error(schema: schemathesis.BaseSchema, path: str,
                                                      body: dict | str, status: int) -> None:
    operation = schema[path]["POST"]
    if isinstance(body, str):  # not JSON, or Python's JSON (NaN) that json= would refuse to send
        response = operation.Case(body=body, media_type="text/plain").call(
            headers={"Content-Type": "application/json"})
    else:
        response = operation.Case(body=body).call()
    check(response)
    assert response.status_code == status, response.text
