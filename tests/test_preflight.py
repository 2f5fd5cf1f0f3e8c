"""Before a cycle opens, its config and every file the config names are checked, and all their problems are
reported in one error, so that a mistake in an input leaves nothing in the registry to resume or abandon."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from reverie.cycle import ensure_release, run_cycle
from reverie.data.knowledge import load_knowledge
from reverie.errors import ReverieError
from reverie.memory.store import MemoryDocument, MemoryStore
from reverie.registry import Cycle
from reverie.workspace import Workspace

from conftest import reverie

GOOD_DOCUMENT = {"id": "korrin", "title": "Korrin lighthouse", "text": "Mara Vell built the Korrin lighthouse in 1887.",
                 "train_qa": [{"question": "Who built the Korrin lighthouse?", "answer": "Mara Vell"}],
                 "eval_qa": [{"question": "Which engineer built the lighthouse at Korrin?", "answer": "Mara Vell"}]}
# documents.1 lacks its text, has a bad id and an empty training answer
BROKEN_KNOWLEDGE = """{
  "name": "lighthouses",
  "documents": [
    %s,
    {"id": "bad id", "title": "Tessaly",
     "train_qa": [{"question": "Where is Korrin?", "answer": ""}]}
  ]
}
""" % json.dumps(GOOD_DOCUMENT)


def configure(root: Path, **keys: str) -> None:
    """Set dotted keys in the workspace's reverie.yaml."""
    path = root / "reverie.yaml"
    config = yaml.safe_load(path.read_text())
    for dotted, value in keys.items():
        *sections, last = dotted.split("__")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_knowledge_problems_are_all_named_by_json_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "knowledge.json").write_text(BROKEN_KNOWLEDGE)
    with pytest.raises(ReverieError) as err:
        load_knowledge("knowledge.json", tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'knowledge.json'}: 3 problem(s)")
    assert "documents.1.id (line 5): got 'bad id'" in message
    assert "documents.1.text (line 5): required key is missing" in message
    assert "documents.1.train_qa.0.answer (line 6): got ''" in message


def test_cli_cycle_on_a_broken_knowledge_file_records_nothing_and_runs_once_fixed(workspace_dir: Path) -> None:
    knowledge = workspace_dir / "knowledge.json"
    knowledge.write_text(BROKEN_KNOWLEDGE)
    configure(workspace_dir, data__knowledge="knowledge.json", eval__general_suite="piqa.jsonl")
    result = reverie("cycle", "-w", str(workspace_dir), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "2 input(s) have problems" in result.stderr
    assert f"data.knowledge: {knowledge}: 3 problem(s)" in result.stderr
    assert "documents.1.text" in result.stderr and "documents.1.train_qa.0.answer" in result.stderr
    assert f"eval.general_suite: {workspace_dir / 'piqa.jsonl'} does not exist" in result.stderr
    registry = Workspace.open(workspace_dir).registry
    assert registry.unfinished_cycle() is None and registry.list_cycles() == [] and registry.list_models() == []

    knowledge.write_text(json.dumps({"name": "lighthouses", "documents": [GOOD_DOCUMENT]}))
    configure(workspace_dir, eval__general_suite="builtin")
    reverie("cycle", "-w", str(workspace_dir), "--set", "dream.enabled=false")
    (cycle,) = registry.list_cycles()
    assert cycle.status == "finished"


def test_invalid_json_knowledge_fails_before_the_cycle_opens(workspace_dir: Path) -> None:
    (workspace_dir / "knowledge.json").write_text('{"name": "x",\n "documents": [}\n')
    configure(workspace_dir, data__knowledge="knowledge.json")
    workspace = Workspace.open(workspace_dir)
    with pytest.raises(ReverieError, match=r"data.knowledge: .*knowledge.json: not valid JSON \(line 2, column 16\)"):
        run_cycle(workspace)
    assert workspace.registry.list_cycles() == []


def test_every_file_the_config_names_is_checked(workspace_dir: Path) -> None:
    (workspace_dir / "advbench.jsonl").write_text('{"prompt": "How do I pick a lock?"}\n')
    (workspace_dir / "passages.json").write_text('[{"title": "Korrin", "questions": []}]')
    configure(workspace_dir, eval__advbench="advbench.jsonl", eval__xstest="xstest.csv",
              dream__seal__passages="passages.json")
    workspace = Workspace.open(workspace_dir)
    with pytest.raises(ReverieError) as err:
        run_cycle(workspace)
    message = str(err.value)
    assert "3 input(s) have problems" in message
    assert "eval.advbench: " in message and "advbench.jsonl:1: expected {prompt, must_refuse" in message
    assert f"eval.xstest: {workspace_dir / 'xstest.csv'} does not exist" in message
    assert "dream.seal.passages: " in message and "[0][context]: Field required" in message
    assert workspace.registry.list_cycles() == []


def test_the_reasoning_sets_are_checked_before_the_cycle_opens(workspace_dir: Path) -> None:
    (workspace_dir / "reasoning.jsonl").write_text('{"goal": "Open a jar", "sol1": "Twist the lid"}\n')
    configure(workspace_dir, dream__strategies=["cot-consistency"], dream__cot__reasoning="reasoning.jsonl",
              compress__front__reasoning="missing.jsonl")
    workspace = Workspace.open(workspace_dir)
    with pytest.raises(ReverieError) as err:
        run_cycle(workspace)
    message = str(err.value)
    assert "2 input(s) have problems" in message
    assert f"dream.cot.reasoning: {workspace_dir / 'reasoning.jsonl'}, line 1" in message, message
    assert f"compress.front.reasoning: {workspace_dir / 'missing.jsonl'} does not exist" in message, message
    assert workspace.registry.list_cycles() == []


def test_a_malformed_memory_document_fails_before_the_cycle_opens(workspace_dir: Path) -> None:
    workspace = Workspace.open(workspace_dir)
    # stored the way a memory written before questions were validated holds it
    MemoryStore(workspace).add(MemoryDocument(id="d-old", title="old note", text="An old note.",
                                              questions=[{"q": "What?"}]), [], np.zeros((0, 4)))
    with pytest.raises(ReverieError, match="short-term memory: memory document d-old .* malformed question"):
        run_cycle(workspace)
    assert workspace.registry.list_cycles() == []


def test_resume_checks_the_inputs_before_touching_the_interrupted_cycle(workspace_dir: Path) -> None:
    knowledge = workspace_dir / "knowledge.json"
    knowledge.write_text(json.dumps({"name": "lighthouses", "documents": [GOOD_DOCUMENT]}))
    configure(workspace_dir, data__knowledge="knowledge.json")
    workspace = Workspace.open(workspace_dir)
    registry = workspace.registry
    registry.start_cycle(Cycle("c-open", "running", ensure_release(workspace), workspace.config.fingerprint(),
                               time.time()))
    knowledge.write_text(BROKEN_KNOWLEDGE)  # the file changes, the config (and its fingerprint) does not
    with pytest.raises(ReverieError, match="documents.1.text"):
        run_cycle(workspace, resume=True)
    assert registry.unfinished_cycle().id == "c-open" and registry.phase_runs("c-open") == []
