"""The data layer: knowledge drops, multiple-choice suites, the checks on the model's own answers, and finding
datasets by kind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reverie.data.knowledge import learn_examples, load_knowledge
from reverie.data.multiple_choice import load_choice_items
from reverie.data.pool import pool_datasets
from reverie.data.redteam import library_versions
from reverie.data.replay import replay_ages
from reverie.data.splits import knowledge_held_out, knowledge_train
from reverie.data.synthetic import majority_vote, supported_by
from reverie.errors import ReverieError
from reverie.registry import Cycle, DatasetRecord
from reverie.workspace import Workspace


def test_demo_knowledge_is_held_out_by_paraphrase() -> None:
    knowledge = load_knowledge("demo", Path("."))
    assert len(knowledge.documents) >= 12
    train = {qa.question for _, qa in knowledge_train(knowledge)}
    for document, qa in knowledge_held_out(knowledge):
        assert qa.question not in train  # asked in other words than Learn saw
        assert supported_by(qa.answer, document.text)
    prompts = [e.prompt for e in learn_examples(knowledge) if e.prompt]
    assert not set(prompts) & {qa.question for _, qa in knowledge_held_out(knowledge)}


def test_bad_knowledge_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"name": "k", "documents": [{"id": "a", "title": "A", "text": "x", "train_qa": [{"question": "q"}]}]}))
    with pytest.raises(ReverieError) as err:
        load_knowledge(str(path), tmp_path)
    assert str(path) in str(err.value) and "documents.0.train_qa.0.answer" in str(err.value)


def test_knowledge_without_eval_questions_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    doc = {"id": "a", "title": "A", "text": "x", "train_qa": [{"question": "q", "answer": "a"}]}
    path.write_text(json.dumps({"name": "k", "documents": [doc]}))
    with pytest.raises(ReverieError, match="no document has eval_qa"):
        load_knowledge(str(path), tmp_path)


def test_malformed_choice_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    path.write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n{"goal": "g", "sol1": "a"}\n')
    with pytest.raises(ReverieError, match="line 2"):
        load_choice_items(str(path), tmp_path, limit=10)


def test_majority_vote_normalises_and_refuses_ties() -> None:
    vote = majority_vote(["quistrand", "The Quistrand", "Quistrand.", "Quistrand.", "Velmora"])
    assert vote is not None and vote.share == 0.8
    assert vote.answer == "Quistrand."  # the winner's most common spelling, as written: not the first, not normalised
    assert majority_vote(["Alpha", "Beta"]) is None
    assert majority_vote(["Alpha", "Alpha", "Beta", "Beta"]) is None
    assert majority_vote(["", "  "]) is None


def test_datasets_are_found_by_kind_and_cycle_whatever_their_names(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    for cycle_id in ("c-1", "c-2", "c-3"):
        ws.registry.start_cycle(Cycle(cycle_id, "finished", "m-base", "cfg", time.time()))
    records = [  # every name breaks the convention readers once parsed
        DatasetRecord("a" * 64, "facts we ingested", 1, "ingest", 1.0, kind="pool", cycle_id=None),
        DatasetRecord("b" * 64, "pool/not-an-ingest", 1, "gate", 2.0, kind="replay", cycle_id="c-1"),
        DatasetRecord("c" * 64, "thumbs down, week 3", 1, "serving", 3.0, kind="feedback", cycle_id="c-2"),
        DatasetRecord("d" * 64, "safety set, spring", 1, "import", 4.0, kind="redteam", cycle_id=None),
        DatasetRecord("e" * 64, "redteam/v1", 1, "learn", 5.0, kind="learn", cycle_id="c-3"),
    ]
    for record in records:
        ws.registry.add_dataset(record)
    assert pool_datasets(ws) == [records[0]]
    assert [(d.name, age) for d, age in replay_ages(ws)] == [("pool/not-an-ingest", 1), ("thumbs down, week 3", 0)]
    assert library_versions(ws) == [records[3]]


def test_supported_by_matches_whole_words_only() -> None:
    assert supported_by("Saffron", "Its flag is saffron with a black heron.")
    assert not supported_by("her", "Its flag is saffron with a black heron.")
