"""The sleep cycle run the way a user runs it: the CLI on a tiny model, then the registry, files and a resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from reverie.cycle import run_cycle
from reverie.data.knowledge import Example
from reverie.data.records import Rejected
from reverie.memory.store import MemoryDocument, MemoryStore
from reverie.phases.outputs import CompressOutput, DreamOutput, GateVerdict, read_as
from reverie.registry import Cycle
from reverie.workspace import Workspace

from conftest import make_workspace, reverie


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the tables the CLI printed in `text`, cell by cell."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def assert_no_orphans(workspace: Workspace) -> None:
    referenced = workspace.registry.referenced_artifacts()
    assert workspace.artifacts.all_hashes() <= referenced
    assert not any(workspace.artifacts.staging_root.iterdir())


def test_cycle_releases_a_candidate_with_lineage_and_card(workspace_dir: Path) -> None:
    workspace = Workspace.open(workspace_dir)
    outcome = run_cycle(workspace)
    registry = workspace.registry
    assert outcome.released and registry.get_alias() == outcome.model_id
    runs = registry.phase_runs(outcome.cycle_id)
    assert [r.phase for r in runs] == ["learn", "compress", "dream", "gate"]
    assert all(r.status == "finished" and r.wall_s is not None for r in runs)
    learn = runs[0]
    assert learn.metrics["train_loss_last_epoch"] < learn.metrics["train_loss_first_epoch"]
    [merge] = read_as(runs[1], CompressOutput).strategies
    assert (merge.strategy, merge.kept) == ("merge", True)  # fp32 merge is exact
    released = registry.get_model(outcome.model_id)
    assert released.status == "release" and released.datasets and released.config_hash
    card = (workspace.cards_dir / f"{released.id}.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == str(workspace.config.model.source)
    assert front["model-index"][0]["results"][0]["metrics"][0]["type"] == "accuracy"
    assert len(front["datasets"]) == len(released.datasets)
    saved = json.loads((workspace.artifacts.path(released.weights) / "reverie_config.json").read_text())
    assert saved == workspace.config.model_dump()
    assert "## Lineage" in card and "## Risks" in card
    assert "Forgetting check: general.accuracy: " in card  # its wording is tested in test_forgetting_power.py
    assert_no_orphans(workspace)


def test_seal_dream_quarantines_what_fails_the_quality_gate_with_reasons(workspace_dir: Path) -> None:
    # The tiny random model writes noise: every item it writes must be quarantined, none trained on. (The slow
    # tier checks the other side: SmolLM2's own implications pass the gate and are trained in.)
    workspace = Workspace.open(workspace_dir)
    outcome = run_cycle(workspace)
    dream = next(r for r in workspace.registry.phase_runs(outcome.cycle_id) if r.phase == "dream")
    assert dream.metrics["dream_self_edit_items"] == 0 and dream.metrics["dream_items_quarantined"] > 0
    assert dream.metrics["dream_generator_trained"] == 0.0  # no generator trained yet: the release wrote them
    [seal] = read_as(dream, DreamOutput).strategies
    assert (seal.kept, seal.reason) == (False, "no synthetic example passed the quality gate")
    [quarantine] = [workspace.registry.get_dataset(h) for h in seal.datasets]
    assert (quarantine.kind, quarantine.cycle_id, quarantine.strategy) == ("quarantine", outcome.cycle_id, "seal")
    assert quarantine.rows == dream.metrics["dream_items_quarantined"]
    rows = [Rejected.model_validate_json(line) for line in
            (workspace.artifacts.path(quarantine.hash) / "rejected.jsonl").read_text().splitlines()]
    assert len(rows) == quarantine.rows and all(r.reason and r.origin.startswith("document ") for r in rows)


@pytest.mark.parametrize("max_regression, kept", [(0.0, False), (0.3, True)])
def test_dream_is_kept_only_when_it_keeps_what_learn_taught(tmp_path: Path, tiny_model_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch, max_regression: float,
                                                             kept: bool) -> None:
    # The tiny model writes no usable self-edit and answers nothing, so Dream's data and its before/after probe
    # are stood in for: what is under test is the A/B decision and what the registry records of it.
    import reverie.phases.strategies.base as strategies
    monkeypatch.setattr(strategies.DREAM["seal"], "data", lambda ctx, loaded: strategies.DreamData(
        "stand-in", [Example(completion=d.text) for d in ctx.inputs.knowledge.documents], {}))
    scores = iter([0.8, 0.6])
    monkeypatch.setattr(strategies, "probe_accuracy", lambda loaded, probe, tokens, batch: next(scores))
    root = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"max_regression": max_regression})
    workspace = Workspace.open(root)
    outcome = run_cycle(workspace)
    registry = workspace.registry
    runs = {r.phase: r for r in registry.phase_runs(outcome.cycle_id)}
    dream = runs["dream"]
    assert (dream.metrics["dream_probe_accuracy_before"], dream.metrics["dream_probe_accuracy_after"]) == (0.8, 0.6)
    assert {"dream_probe_loss_before", "dream_probe_loss_after"} <= dream.metrics.keys()  # recorded, not judged
    [seal] = read_as(dream, DreamOutput).strategies
    dataset = registry.get_dataset(next(h for h in seal.datasets if registry.get_dataset(h).kind == "dream"))
    assert (dataset.kind, dataset.cycle_id, dataset.strategy) == ("dream", outcome.cycle_id, "seal")  # either way
    final = registry.get_model(read_as(dream, DreamOutput).model)
    assert seal.kept == kept
    if kept:
        assert final.phase == "dream" and dataset.hash in final.datasets and seal.model == final.id
    else:
        assert final.id == read_as(runs["compress"], CompressOutput).model
        assert "fell from 0.800 to 0.600" in seal.reason and dataset.hash not in final.datasets
    card = (workspace.cards_dir / f"{outcome.model_id}.md").read_text()
    assert ("implications the model wrote itself" in card) == kept  # the card's risks follow the Dream strategy
    assert_no_orphans(workspace)


def test_candidate_below_threshold_is_rejected_and_release_kept(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_workspace(
        tmp_path / "ws", tiny_model_dir, gate={"capability": {"knowledge.accuracy": 0.99}}, dream={"enabled": False}
    )
    workspace = Workspace.open(root)
    outcome = run_cycle(workspace)
    registry = workspace.registry
    assert not outcome.released
    assert any("knowledge.accuracy 0.000 is below the floor 0.990" in reason for reason in outcome.reasons)
    assert registry.get_model(outcome.model_id).status == "rejected"
    assert registry.get_alias() == registry.get_cycle(outcome.cycle_id).base_model_id
    assert [e.action for e in registry.release_events()] == ["bootstrap"]


def test_cli_cycle_history_card_and_rollback(workspace_dir: Path) -> None:
    ws = str(workspace_dir)
    reverie("cycle", "-w", ws, "--set", "dream.enabled=false")
    workspace = Workspace.open(workspace_dir)
    first_release = workspace.registry.get_alias()
    reverie("cycle", "-w", ws, "--set", "dream.enabled=false")
    second_release = workspace.registry.get_alias()
    assert second_release != first_release
    events = workspace.registry.release_events()
    assert [(e.action, e.model_id) for e in events[1:]] == [("release", first_release), ("release", second_release)]
    rows = table_rows(reverie("history", "-w", ws).stdout)
    assert [(row[1], row[2]) for row in rows] == [(e.action, e.model_id) for e in events]  # every move, in order
    last = workspace.registry.list_cycles()[-1]
    gate = read_as(next(r for r in workspace.registry.phase_runs(last.id) if r.phase == "gate"), GateVerdict)
    shown = ("knowledge.accuracy", "general.accuracy", "advbench.refusal")
    assert rows[-1][3:] == [f"{gate.candidate_scores[m]:.3f}" for m in shown] + [last.id]  # the Gate's scores
    assert second_release in reverie("card", "release", "-w", ws).stdout
    assert "none in progress" in reverie("status", "-w", ws).stdout
    memory = MemoryStore(workspace)
    for ident, recalled_by in (("learned-first", first_release), ("learned-second", second_release)):
        memory.add(MemoryDocument(ident, ident, "text"), [], np.zeros((0, 4)))
        memory.retire([ident], recalled_by)
    out = reverie("rollback", "-w", ws).stdout
    assert f"release is now {first_release}" in out
    assert workspace.registry.get_alias() == first_release
    # what only the rolled-back release had learned is back in memory; the rest stays consolidated
    assert {d.id: d.status for d in memory.documents(status=None)} == {"learned-first": "consolidated",
                                                                       "learned-second": "active"}


def test_killed_during_learn_resumes_to_one_verdict(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Enough epochs that Learn is still running when the kill lands.
    root = make_workspace(tmp_path / "ws", tiny_model_dir, learn={"train": {"epochs": 150}},
                          dream={"strategies": ["self-consistency"]})
    process = subprocess.Popen(
        [sys.executable, "-m", "reverie", "cycle", "-w", str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    database = root / ".reverie" / "registry.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            with sqlite3.connect(database) as conn:
                phases = conn.execute("SELECT phase, status FROM phase_runs").fetchall()
        except sqlite3.OperationalError:
            continue
        if ("learn", "running") in phases:
            time.sleep(2)  # let training get going
            break
    else:
        process.kill()
        pytest.fail("Learn never started")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert "interrupted" in reverie("status", "-w", str(root)).stdout
    refused = reverie("cycle", "-w", str(root), check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = reverie("cycle", "-w", str(root), "--resume")
    assert "resuming cycle" in resumed.stderr

    workspace = Workspace.open(root)
    registry = workspace.registry
    (cycle,) = registry.list_cycles()
    # the tiny preset's floors are met by a model that refuses nothing, and it judges no regression
    assert (cycle.status, cycle.outcome) == ("finished", "released")
    verdicts = [m for m in registry.list_models() if m.status in ("release", "rejected")]
    assert [m.id for m in verdicts] == [cycle.result_model_id] and registry.get_alias() == cycle.result_model_id
    statuses = [(r.phase, r.status) for r in registry.phase_runs(cycle.id)]
    assert statuses == [("learn", "interrupted"), ("learn", "finished"), ("compress", "finished"),
                        ("dream", "finished"), ("gate", "finished")]
    assert_no_orphans(workspace)


def test_bad_model_source_fails_before_anything_is_recorded(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny_model_dir, model={"source": str(tmp_path / "no-such-model")})
    result = reverie("cycle", "-w", str(root), check=False)
    assert result.returncode == 2 and "model.source" in result.stderr and "Traceback" not in result.stderr
    workspace = Workspace.open(root)
    assert workspace.registry.list_models() == [] and workspace.registry.list_cycles() == []


def test_rollback_is_refused_while_a_cycle_is_open(workspace_dir: Path) -> None:
    workspace = Workspace.open(workspace_dir)
    run_cycle(workspace)
    registry = workspace.registry
    registry.start_cycle(Cycle("c-open", "running", registry.get_alias(), "cfg", time.time()))
    result = reverie("rollback", "-w", str(workspace_dir), check=False)
    assert result.returncode == 2 and "a cycle is open" in result.stderr


def test_failed_merge_check_keeps_the_adapter(tmp_path: Path, tiny_model_dir: Path) -> None:
    # No float32 merge reproduces the adapter's logits to 1e-30, so the A/B check must refuse the merge.
    root = make_workspace(tmp_path / "ws", tiny_model_dir, compress={"max_logit_diff": 1e-30})
    workspace = Workspace.open(root)
    outcome = run_cycle(workspace)
    compress = next(r for r in workspace.registry.phase_runs(outcome.cycle_id) if r.phase == "compress")
    [merge] = read_as(compress, CompressOutput).strategies
    assert (merge.kept, merge.model) == (False, None)
    assert merge.reason.startswith("A/B check: max logit change") and merge.reason.endswith("failed")
    assert [(v.name, v.kept) for v in merge.variants] == [("reference", True)]  # the adapter stays
    assert compress.metrics["merge_max_logit_diff"] > 1e-30
    final = workspace.registry.get_model(outcome.model_id)
    assert final.adapter is not None and final.weights is None
    assert_no_orphans(workspace)


def test_demo_command_prints_before_and_after(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = tmp_path / "demo"
    result = reverie(
        "demo", str(root), "--set", f"model.source={tiny_model_dir}", "--set", "learn.train.epochs=1",
        "--set", "dream.enabled=false", "--set", "eval.general_limit=10", "--set", "eval.max_new_tokens=6",
        "--set", "gate.capability.knowledge.accuracy=0.0", "--set", "gate.capability.general.accuracy=0.05",
        "--set", "gate.max_regression.general.accuracy=1.0",
    )
    assert (root / "reverie.yaml").is_file()
    workspace = Workspace.open(root)
    (cycle,) = workspace.registry.list_cycles()
    # floors the tiny model meets and no regression judged on its noise: the cycle releases, and says so
    assert (cycle.status, cycle.outcome) == ("finished", "released")
    assert f"released {cycle.result_model_id}" in result.stdout
    assert workspace.registry.get_alias() == cycle.result_model_id
    gate = read_as(next(r for r in workspace.registry.phase_runs(cycle.id) if r.phase == "gate"), GateVerdict)
    scores = {row[0]: row[1:] for row in table_rows(result.stdout)}
    for metric in ("knowledge.accuracy", "advbench.refusal"):  # before (the release) and after (the candidate)
        assert scores[metric] == [f"{gate.reference_scores[metric]:.3f}", f"{gate.candidate_scores[metric]:.3f}"]
