"""One character must not stop the sleep cycle: text with line separators, NUL or lone surrogates, ingested and
posted to the server, leaves a cycle that completes, with the text trained on exactly as it was sent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings, strategies as st
from transformers import AutoTokenizer

from reverie.data.feedback import read_inbox
from reverie.data.jsonl import read_jsonl
from reverie.data.pool import draw_for_learn, ingest_path, load_records, pool_datasets
from reverie.engines.training import tokenize
from reverie.workspace import Workspace

from conftest import make_workspace, reverie, start_server

ODD = "\u2028\u2029\u0085\x00"  # line and paragraph separators, NEL, NUL: valid text every store must keep
SOURCES = {"sources": {"team": {"tier": 3, "licence": "internal"}}}


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(ODD + "\ud800 \n") | st.characters(codec="utf-8"), min_size=1, max_size=30))
def test_any_text_goes_from_ingest_through_the_pool_into_learn(tmp_path_factory, tiny_model_dir: Path,
                                                                text: str) -> None:
    root = make_workspace(tmp_path_factory.mktemp("ws"), tiny_model_dir, data=SOURCES, learn={"pool_records": 1})
    ws = Workspace.open(root)
    path = root / "rows.jsonl"
    path.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")  # json.dumps escapes the surrogate
    dataset, result = ingest_path(ws, path, "team", "general")
    if "\ud800" in text or not text.strip():
        [rejected] = result.rejected
        assert rejected.step == "schema"
        return
    assert [r.text for r in load_records(ws, dataset)] == [text]
    [example] = draw_for_learn(ws, 0, [d.hash for d in pool_datasets(ws)]).examples
    assert example.completion == text
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenize(tokenizer, example, max_len=4096).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_a_cycle_completes_after_odd_characters_are_ingested_and_posted(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny_model_dir, data=SOURCES, learn={"pool_records": 4})
    rows = tmp_path / "odd.jsonl"
    notes = ["the harbour bell hangs in a tower of grey stone", "owls nest in hollow oaks in the north woods",
             "the rowing club has won the cup eleven times", "a ferry leaves the island twice every morning"]
    texts = [f"First{c}{note}, a line kept whole." for c, note in zip(ODD, notes)]
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts)
                    + json.dumps({"prompt": f"Who rings{ODD}the bell?", "completion": f"Mara{ODD}Vell"}) + "\n"
                    + '{"text": "a lone \\ud800 surrogate in a note about the harbour"}\n', encoding="utf-8")
    ingested = reverie("data", "ingest", str(rows), "--source", "team", "-w", str(root))
    assert "lone surrogate U+D800" in ingested.stdout

    correction = f"The bell{ODD} is rung at dawn."
    url, process = start_server(root)
    try:
        down = httpx.post(f"{url}/v1/feedback", timeout=30, json={
            "prompt": f"When is the bell rung?{ODD}", "answer": "never", "rating": "down", "correction": correction})
        assert down.status_code == 200
        surrogate = httpx.post(f"{url}/v1/feedback", timeout=30, headers={"content-type": "application/json"},
                               content=b'{"prompt": "p \\ud800", "answer": "a", "rating": "down", "correction": "c"}')
        assert surrogate.status_code == 422 and "surrogate" in surrogate.json()["error"]["message"]
        memory = httpx.post(f"{url}/v1/memory", timeout=60, json={
            "title": f"Bell{ODD}", "text": f"The harbour bell{ODD} of Osk is rung by Mara Vell at dawn each day.",
            "train_questions": [{"question": f"Who rings{ODD} the harbour bell?", "answer": "Mara Vell"}]})
        assert memory.status_code == 200, memory.text
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert len(read_inbox(Workspace.open(root))[0]) == 1  # the refused one is not in the inbox

    cycle = reverie("cycle", "-w", str(root))
    assert "Traceback" not in cycle.stderr
    ws = Workspace.open(root)
    assert ws.registry.unfinished_cycle() is None
    [dataset] = pool_datasets(ws)
    assert sorted(r.content() for r in load_records(ws, dataset)) == sorted(
        texts + [f"Who rings{ODD}the bell?\nMara{ODD}Vell"])
    [feedback] = ws.registry.list_datasets(kind="feedback")
    [example] = read_jsonl(ws.artifacts.path(feedback.hash) / "examples.jsonl")
    assert example["completion"] == correction
    reverie("data", "stats", "-w", str(root))
    reverie("cycle", "-w", str(root))  # and the next night too
