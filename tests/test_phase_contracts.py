"""The joins between the parts: typed phase outputs, a cycle's frozen inputs, and held-out isolation."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import reverie
import reverie.data.splits as splits
from reverie.cli import app
from reverie.cycle import run_cycle
from reverie.cycle_inputs import freeze_inputs, load_inputs
from reverie.data.knowledge import load_knowledge
from reverie.data.splits import HeldOutRead, general_held_out, knowledge_held_out, reading_as, safety_held_out
from reverie.errors import ReverieError
from reverie.memory.store import MemoryDocument, MemoryStore
from reverie.phases.compress import Compress
from reverie.phases.learn import Learn
from reverie.phases.outputs import OUTPUT_TYPES, CompressOutput, GateVerdict, read_as, read_output
from reverie.workspace import Workspace

from conftest import make_workspace

DAY_QUESTION = "Which colour is the lighthouse keeper's new door?"


def add_day_document(workspace: Workspace) -> MemoryDocument:
    document = MemoryDocument("d-day", "The new door", "The lighthouse keeper painted the new door teal.",
                              questions=[{"question": DAY_QUESTION, "answer": "teal"}])
    MemoryStore(workspace).add(document, [], np.zeros((0, 4)))
    return document


def test_held_out_items_are_read_by_the_gate_alone_in_a_whole_cycle(workspace_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[tuple[str | None, str]] = []
    check = splits.check_reader

    def recording(source: str) -> None:
        reads.append((splits._reader.get(), source))
        check(source)

    monkeypatch.setattr(splits, "check_reader", recording)
    workspace = Workspace.open(workspace_dir)
    outcome = run_cycle(workspace)
    in_phases = {reader for reader, _ in reads if reader is not None}
    assert in_phases == {"gate"}  # Learn, Compress (merge check) and Dream (A/B check) read none
    assert {source for reader, source in reads if reader == "gate"} >= {"knowledge 'demo-knowledge'",
                                                                        "the general suite", "eval.xstest"}

    # and every phase output reads back from the registry as its typed model, artifacts included
    for run in workspace.registry.phase_runs(outcome.cycle_id):
        output = read_output(run)
        assert type(output) is OUTPUT_TYPES[run.phase]
        assert output.model_dump(mode="json") == run.outputs and output.artifacts() == run.artifacts
    verdict = read_as(workspace.registry.phase_runs(outcome.cycle_id)[-1], GateVerdict)
    assert (verdict.model, verdict.released) == (outcome.model_id, outcome.released)


@pytest.mark.parametrize("phase", ["learn", "compress", "dream"])
def test_a_phase_that_reads_held_out_items_is_stopped(phase: str) -> None:
    knowledge = load_knowledge("demo", Path("."))
    with reading_as(phase):
        for read in (lambda: knowledge_held_out(knowledge), lambda: general_held_out([]),
                     lambda: safety_held_out([], "eval.advbench")):
            with pytest.raises(HeldOutRead, match=f"{phase} read the held-out split"):
                read()
    with reading_as("gate"):
        assert len(knowledge_held_out(knowledge)) == 32
    assert len(knowledge_held_out(knowledge)) == 32  # outside a cycle (`reverie eval`) nobody selects


def test_only_the_splits_module_reads_eval_qa() -> None:
    package = Path(reverie.__file__).parent
    readers = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     if any(isinstance(node, ast.Attribute) and node.attr == "eval_qa"
                            for node in ast.walk(ast.parse(path.read_text()))))
    assert readers == ["data/knowledge.py", "data/splits.py"]  # the schema checks that a drop has some


def interrupted_cycle(workspace: Workspace, monkeypatch: pytest.MonkeyPatch, phase: type, during=None) -> str:
    """A cycle stopped at `phase` (after `during` ran, if given), as a crash would leave it."""
    def stop(self, ctx):
        if during:
            during(ctx)
        raise RuntimeError("stopped for the test")

    with monkeypatch.context() as patch:
        patch.setattr(phase, "run", stop)
        with pytest.raises(RuntimeError, match="stopped for the test"):
            run_cycle(workspace)
    cycle = workspace.registry.unfinished_cycle()
    assert cycle is not None
    return cycle.id


def test_a_memory_document_added_mid_cycle_waits_for_the_next_cycle(tmp_path: Path, tiny_model_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"enabled": False}, compress={"strategies": []})
    workspace = Workspace.open(root)
    cycle_id = interrupted_cycle(workspace, monkeypatch, Compress, during=lambda ctx: add_day_document(workspace))

    status = CliRunner().invoke(app, ["status", "-w", str(root)])
    assert status.exit_code == 0, status.output
    assert "1 memory document(s) added since the cycle started wait for the next cycle (d-day)" in status.output

    outcome = run_cycle(workspace, resume=True)
    assert outcome.cycle_id == cycle_id
    assert load_inputs(workspace, workspace.registry.get_cycle(cycle_id)).memory_documents() == []
    compress = next(run for run in workspace.registry.phase_runs(cycle_id)
                    if (run.phase, run.status) == ("compress", "finished"))
    passed = read_as(compress, CompressOutput)  # no strategy: the Learn model passes on, adapter and all
    assert (passed.strategies, passed.reason) == ([], "compress.strategies is empty")
    assert workspace.registry.get_model(outcome.model_id).adapter is not None
    [asked] = (workspace.state / "evals" / outcome.model_id).glob("knowledge@*.jsonl")
    prompts = [json.loads(line)["prompt"] for line in asked.read_text().splitlines()]
    assert len(prompts) == 32 and DAY_QUESTION not in prompts  # the Gate asked only what Learn was given
    assert [d.id for d in MemoryStore(workspace).documents()] == ["d-day"]  # still in memory: not consolidated

    _, next_inputs = freeze_inputs(workspace, "c-next")
    assert next_inputs.memory_documents() == ["d-day"]  # the next cycle takes it


def test_a_resume_whose_frozen_inputs_changed_is_refused(workspace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace.open(workspace_dir)
    cycle_id = interrupted_cycle(workspace, monkeypatch, Learn)
    frozen = workspace.registry.get_cycle(cycle_id).inputs
    inputs = workspace.artifacts.path(frozen) / "inputs.json"
    original = inputs.read_text()
    inputs.write_text(original.replace("demo-knowledge", "edited-knowledge"))
    with pytest.raises(ReverieError, match=f"cycle {cycle_id}: its frozen inputs changed on disk .*--abandon"):
        run_cycle(workspace, resume=True)
    inputs.unlink()
    inputs.parent.rmdir()
    with pytest.raises(ReverieError, match=f"cycle {cycle_id}: its frozen inputs are gone"):
        run_cycle(workspace, resume=True)
    assert workspace.registry.unfinished_cycle().id == cycle_id  # refused before anything moved
