"""Short-term memory: hygiene, retrieval with citations by day, consolidation into the cycle at night."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from reverie.cycle import run_cycle
from reverie.data.splits import knowledge_held_out
from reverie.errors import ReverieError
from reverie.memory.store import MEMORY_PREFIX, MemoryStore, current_knowledge, recalled_documents
from reverie.phases.outputs import GateVerdict, LearnOutput, read_as
from reverie.workspace import Workspace

from conftest import chat, reverie

LIGHTHOUSE = ("The Korrin lighthouse on the island of Tessaly was built in 1887 by the engineer Mara Vell. Its "
              "lamp is fed by whale oil and can be seen from forty kilometres away on a clear night.")


def test_cli_adds_documents_after_hygiene_and_lists_what_it_refused(workspace_dir: Path, tmp_path: Path) -> None:
    document = tmp_path / "lighthouse.txt"
    document.write_text(LIGHTHOUSE)
    ws = str(workspace_dir)
    added = reverie("memory", "add", str(document), "-w", ws, "--question", "Who built the Korrin lighthouse?",
                    "--answer", "Mara Vell")
    assert "added" in added.stdout
    again = reverie("memory", "add", str(document), "-w", ws, check=False)
    assert again.returncode == 2 and "exact duplicate" in again.stderr
    short = tmp_path / "short.txt"
    short.write_text("too short")
    assert "too short" in reverie("memory", "add", str(short), "-w", ws, check=False).stderr
    listing = reverie("memory", "list", "-w", ws).stdout
    assert "lighthouse" in listing and "active" in listing and "refused 'short'" in listing
    mismatched = reverie("memory", "add", str(document), "-w", ws, "--question", "q?", check=False)
    assert mismatched.returncode == 2 and "--answer 0 times" in mismatched.stderr
    (_, held_out), *_ = knowledge_held_out(current_knowledge(Workspace.open(workspace_dir)))
    other = tmp_path / "other.txt"
    other.write_text(LIGHTHOUSE.replace("1887", "1888"))
    leaking = reverie("memory", "add", str(other), "-w", ws, "--train-question", held_out.question,
                      "--train-answer", held_out.answer, check=False)
    assert leaking.returncode == 2 and "training question 1 overlaps evaluation item" in leaking.stderr

    (document_id,) = [d.id for d in MemoryStore(Workspace.open(workspace_dir)).documents()]
    assert "removed" in reverie("memory", "remove", document_id, "-w", ws).stdout
    assert "active" not in reverie("memory", "list", "-w", ws).stdout  # its row is gone
    unknown = reverie("memory", "remove", document_id, "-w", ws, check=False)
    assert unknown.returncode == 2 and "no memory document" in unknown.stderr


def test_malformed_recall_questions_are_refused_before_they_are_stored(workspace_dir: Path) -> None:
    from reverie.memory.retrieval import ShortTermMemory

    memory = ShortTermMemory(Workspace.open(workspace_dir))
    with pytest.raises(ReverieError, match="questions 1 is .* non-empty 'question' and 'answer'"):
        memory.add("Korrin lighthouse", LIGHTHOUSE, [{"question": "Who built it?", "answer": ""}], "test")
    with pytest.raises(ReverieError, match="train_questions 1 is"):
        memory.add("Korrin lighthouse", LIGHTHOUSE, [], "test", [{"q": "Who built it?"}])
    assert MemoryStore(memory.ws).documents(status=None) == []


@pytest.mark.serve_args("--set", "serve.retrieval=true")
def test_a_document_added_by_day_is_answered_with_a_citation_at_once(server, workspace_dir: Path) -> None:
    url, _ = server
    added = httpx.post(f"{url}/v1/memory", timeout=60, json={
        "title": "Korrin lighthouse", "text": LIGHTHOUSE,
        "questions": [{"question": "Who built the Korrin lighthouse?", "answer": "Mara Vell"}]})
    assert added.status_code == 200
    answer = chat(url, "Who built the Korrin lighthouse on Tessaly?").json()
    assert answer["citations"][0]["document_id"] == added.json()["id"]
    assert chat(url, "Who built the Korrin lighthouse on Tessaly?", retrieval=False).json()["citations"] == []
    refused = httpx.post(f"{url}/v1/memory", json={"title": "x", "text": "hi"}, timeout=60)
    assert refused.status_code == 422 and "too short" in refused.json()["error"]["message"]
    malformed = httpx.post(f"{url}/v1/memory", timeout=60, json={
        "title": "x", "text": LIGHTHOUSE, "questions": [{"question": "Who built it?"}]})
    assert malformed.status_code == 422 and "questions.0.answer" in malformed.json()["error"]["message"]


def test_memory_joins_the_cycle_and_leaves_once_recalled(workspace_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    document = tmp_path / "lighthouse.txt"
    document.write_text(LIGHTHOUSE)
    ws = str(workspace_dir)
    reverie("memory", "add", str(document), "-w", ws, "--question", "Who built the Korrin lighthouse?",
            "--answer", "Mara Vell", "--train-question", "Which engineer designed the lighthouse on Tessaly?",
            "--train-answer", "Mara Vell")
    workspace = Workspace.open(workspace_dir)
    knowledge = current_knowledge(workspace)
    (memory_doc,) = [d for d in knowledge.documents if d.id.startswith(MEMORY_PREFIX)]
    index = next(i for i, (doc, _) in enumerate(knowledge_held_out(knowledge)) if doc is memory_doc)
    assert recalled_documents(knowledge, {index: False}) == []
    assert recalled_documents(knowledge, {index: True}) == [memory_doc.id.removeprefix(MEMORY_PREFIX)]

    # The tiny model answers nothing, so the Gate is told that every held-out question was answered: what is under
    # test is that the Gate finds the recalled memory document and the cycle retires it with the release.
    import reverie.phases.gate as gate_phase
    monkeypatch.setattr(gate_phase, "recalled_documents",
                        lambda knowledge, correct: recalled_documents(knowledge, dict.fromkeys(correct, True)))
    outcome = run_cycle(Workspace.open(workspace_dir, ["dream.enabled=false"]))
    assert outcome.released, outcome.reasons
    runs = {r.phase: r for r in workspace.registry.phase_runs(outcome.cycle_id)}
    learned = workspace.artifacts.path(read_as(runs["learn"], LearnOutput).dataset) / "examples.jsonl"
    assert "Korrin lighthouse" in learned.read_text()  # consolidated at night: trained on
    assert "Which engineer designed the lighthouse on Tessaly?" in learned.read_text()
    document_id = memory_doc.id.removeprefix(MEMORY_PREFIX)
    assert read_as(runs["gate"], GateVerdict).recalled_memory == [document_id]
    [stored] = MemoryStore(workspace).documents(status=None)
    assert (stored.id, stored.status, stored.retired_by) == (document_id, "consolidated", outcome.model_id)
    assert not [d for d in current_knowledge(workspace).documents if d.id.startswith(MEMORY_PREFIX)]


def test_memory_add_says_what_is_wrong_with_the_path(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    reverie("init", ws)
    folder = tmp_path / "notes"
    folder.mkdir()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\u00e9 notes".encode("latin-1"))
    problems = {folder: f"{folder} is a directory; memory add takes one UTF-8 text or Markdown file",
                tmp_path / "missing.md": f"{tmp_path / 'missing.md'} does not exist; memory add takes one UTF-8",
                latin1: f"{latin1}: not UTF-8 text (byte 3 cannot be decoded)"}
    for path, expected in problems.items():
        result = reverie("memory", "add", str(path), "-w", ws, check=False)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
