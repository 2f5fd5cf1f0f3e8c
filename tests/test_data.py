"""The data layer: knowledge drops, multiple-choice suites, and the checks on the model's own answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reverie.data.knowledge import learn_examples, load_knowledge
from reverie.data.multiple_choice import load_choice_items
from reverie.data.synthetic import majority_vote, supported_by
from reverie.errors import ReverieError


def test_demo_knowledge_is_held_out_by_paraphrase() -> None:
    knowledge = load_knowledge("demo", Path("."))
    assert len(knowledge.documents) >= 12
    train = {qa.question for _, qa in knowledge.train_items()}
    for document, qa in knowledge.eval_items():
        assert qa.question not in train  # asked in other words than Learn saw
        assert supported_by(qa.answer, document.text)
    prompts = [e.prompt for e in learn_examples(knowledge) if e.prompt]
    assert not set(prompts) & {qa.question for _, qa in knowledge.eval_items()}


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
    vote = majority_vote(["Quistrand.", "quistrand", "The Quistrand", "Velmora"])
    assert vote is not None and vote.share == 0.75 and vote.answer in ("Quistrand.", "quistrand", "The Quistrand")
    assert majority_vote(["Alpha", "Beta"]) is None
    assert majority_vote(["Alpha", "Alpha", "Beta", "Beta"]) is None
    assert majority_vote(["", "  "]) is None


def test_supported_by_matches_whole_words_only() -> None:
    assert supported_by("Saffron", "Its flag is saffron with a black heron.")
    assert not supported_by("her", "Its flag is saffron with a black heron.")
