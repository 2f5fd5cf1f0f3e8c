"""`reverie seal ...` the way a user runs it, on a tiny model: train, resume, generate, eval, bench, errors."""

from __future__ import annotations

import json
from pathlib import Path

from reverie.registry import GENERATOR_ALIAS
from reverie.workspace import Workspace

from conftest import make_workspace, reverie


def test_train_registers_each_round_and_a_rerun_repeats_nothing(workspace_dir: Path) -> None:
    ws = str(workspace_dir)
    first = reverie("seal", "train", "-w", ws, "--rounds", "2")
    assert "round 2:" in first.stderr
    workspace = Workspace.open(workspace_dir)
    registry = workspace.registry
    generators = [m for m in registry.list_models() if m.status == "generator"]
    assert len(generators) == 2
    release = registry.get_alias()
    assert generators[0].parent_id == release and generators[1].parent_id == generators[0].id
    assert registry.get_alias(GENERATOR_ALIAS) == generators[1].id
    assert registry.get_metrics(generators[1].id, "rest-em")["trials_run"] == 3 * (1 + 2)
    assert [e.action for e in registry.release_events()] == ["bootstrap"]  # training a generator releases nothing

    status = reverie("status", "-w", ws).stdout
    assert f"generator: {generators[1].id} (rest-em round 2)" in status
    again = reverie("seal", "train", "-w", ws, "--rounds", "2")
    assert "round" not in again.stderr  # both rounds came from the journal
    assert len([m for m in Workspace.open(workspace_dir).registry.list_models() if m.status == "generator"]) == 2


def test_generate_writes_self_edits_for_every_document(workspace_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "edits.jsonl"
    reverie("seal", "generate", str(out), "-w", str(workspace_dir), "--samples", "2")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 16 and all(len(r["self_edits"]) == 2 for r in rows)
    assert {"id", "title", "self_edits"} == set(rows[0])
    missing = reverie("seal", "generate", str(tmp_path / "no" / "x.jsonl"), "-w", str(workspace_dir), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_eval_needs_a_trained_generator_then_scores_it(workspace_dir: Path) -> None:
    ws = str(workspace_dir)
    before = reverie("seal", "eval", "-w", ws, "--limit", "2", check=False)
    assert before.returncode == 2 and "reverie seal train" in before.stderr
    reverie("seal", "train", "-w", ws, "--rounds", "1")
    result = reverie("seal", "eval", "-w", ws, "--limit", "2", "--conditions", "passage,seal")
    assert "seal - passage" in result.stdout and "closed-book accuracy over 2 passages" in result.stdout
    multi = reverie("seal", "eval", "-w", ws, "--limit", "3", "--conditions", "passage,seal", "--multi-passage", "2")
    assert "cpt2-seal (one adapter per group of passages)" in multi.stdout and "in 2 groups" in multi.stdout
    bad = reverie("seal", "eval", "-w", ws, "--conditions", "passage,oracle", check=False)
    assert bad.returncode == 2 and "choose from" in bad.stderr


def test_bench_trains_on_passages_disjoint_from_evaluation(tmp_path: Path, tiny_model_dir: Path) -> None:
    passages = [{"title": f"Place {i}", "context": f"Place {i} is governed from Town {i}.",
                 "questions": [{"question": f"Where is Place {i} governed from?", "answer": f"Town {i}"}]}
                for i in range(4)]
    (tmp_path / "train.json").write_text(json.dumps(passages[:3]))
    (tmp_path / "eval.json").write_text(json.dumps(passages[2:]))
    ws = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"seal": {"passages": str(tmp_path / "train.json")}})
    result = reverie("seal", "bench", "-w", str(ws), "--passages", str(tmp_path / "eval.json"),
                     "--conditions", "base,own,seal")
    assert "seal - own" in result.stdout
    state = next((ws / ".reverie" / "seal").glob("bench-*"))
    trained_on = json.loads((state / "rest-em" / "round-1.jsonl").read_text().splitlines()[1])["value"]
    assert len(trained_on) == 2  # 'Place 2' is an evaluation title: only two training passages had self-edits
    assert Workspace.open(ws).registry.get_alias(GENERATOR_ALIAS) is None  # bench registers nothing


def test_judge_grader_without_a_judge_model_is_a_config_error(workspace_dir: Path) -> None:
    result = reverie("seal", "train", "-w", str(workspace_dir), "--set", "dream.seal.grader=judge", check=False)
    assert result.returncode == 2 and "judge_model is not set" in result.stderr


def test_missing_passages_file_names_the_key(workspace_dir: Path) -> None:
    result = reverie("seal", "train", "-w", str(workspace_dir), "--set", "dream.seal.passages=nope.json",
                     check=False)
    assert result.returncode == 2 and "dream.seal.passages:" in result.stderr and "nope.json" in result.stderr
    assert "Traceback" not in result.stderr
