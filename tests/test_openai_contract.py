"""The server as the official `openai` client sees it: typed requests in, typed responses and exceptions out."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import openai
import pytest

from reverie.workspace import Workspace

from conftest import start_server

KEY = "contract-key"


@pytest.fixture(scope="module")
def client(serving_workspace_dir: Path) -> Iterator[openai.OpenAI]:
    url, process = start_server(serving_workspace_dir, "--api-key", KEY)
    yield openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
    process.terminate()
    process.wait(timeout=30)


HELLO = [{"role": "user", "content": "Hello there"}]


def test_a_chat_answer_is_a_typed_completion(client: openai.OpenAI, serving_workspace_dir: Path) -> None:
    answer = client.chat.completions.create(model="reverie", messages=HELLO, max_tokens=4)
    assert answer.model == Workspace.open(serving_workspace_dir).registry.get_alias()
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 4 and answer.usage.total_tokens == answer.usage.prompt_tokens + 4


def test_a_stream_tells_what_the_plain_answer_tells(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="reverie", messages=HELLO, max_tokens=4)
    chunks = list(client.chat.completions.create(model="reverie", messages=HELLO, max_tokens=4, stream=True,
                                                 stream_options={"include_usage": True}))
    *with_choices, last = chunks
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == plain.choices[0].message.content
    assert with_choices[-1].choices[0].finish_reason == plain.choices[0].finish_reason == "length"
    assert last.choices == [] and last.usage == plain.usage


def test_text_parts_and_the_developer_role_go_through(client: openai.OpenAI) -> None:
    parts = client.chat.completions.create(model="reverie", max_tokens=3, messages=[
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}])
    plain = client.chat.completions.create(model="reverie", max_tokens=3, messages=[
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello\nthere"}])
    assert parts.usage == plain.usage and parts.choices[0].message.content == plain.choices[0].message.content


def test_n_gives_n_choices(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="reverie", messages=HELLO, max_tokens=3, n=2, temperature=1.0)
    assert [choice.index for choice in answer.choices] == [0, 1]


def test_completions_stop_and_say_why_in_both_forms(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="reverie", prompt="Once upon", max_tokens=2)
    streamed = list(client.completions.create(model="reverie", prompt="Once upon", max_tokens=2, stream=True))
    assert plain.choices[0].finish_reason == streamed[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    whole = client.completions.create(model="reverie", prompt="Once upon", max_tokens=8).choices[0].text
    cut = client.completions.create(model="reverie", prompt="Once upon", max_tokens=8, stop=[whole[1:3]])
    assert cut.choices[0].text == whole[: whole.index(whole[1:3])] != "" and cut.choices[0].finish_reason == "stop"


def test_models_are_listed_with_their_creation_time(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert models[0].id == "reverie" and all(isinstance(m.created, int) and m.created > 0 for m in models)


def test_refusals_raise_the_clients_own_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as image:
        client.chat.completions.create(model="reverie", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "'image_url'" in image.value.message and image.value.param == "messages.0.content"
    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(model="reverie", messages=HELLO, temperature=2.5)
    assert hot.value.param == "temperature" and hot.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        client.with_options(api_key="wrong").models.list()
