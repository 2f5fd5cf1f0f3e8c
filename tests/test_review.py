"""Human spot checks: `reverie data review` in a terminal session, and the Gate that waits for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reverie.data.datasets import save_dataset
from reverie.data.knowledge import Example
from reverie.data.review import find_dataset, load_review
from reverie.errors import ReverieError
from reverie.phases.gate import review_reasons
from reverie.registry import DatasetRecord, ModelRecord
from reverie.workspace import Workspace

from conftest import make_workspace


def review(ws: Path, key: str, answers: str, sample: int = 3) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reverie", "data", "review", key, "-w", str(ws), "--sample",
                           str(sample)], input=answers, capture_output=True, text=True)


@pytest.fixture
def reviewed_setup(tmp_path: Path, tiny_model_dir: Path):
    root = make_workspace(tmp_path / "ws", tiny_model_dir, gate={"require_review": True, "min_reviewed_rows": 3})
    ws = Workspace.open(root)
    examples = [Example(completion=f"Velmora fact number {i} is about its flag.") for i in range(10)]
    dataset = save_dataset(ws, "demo/dream-seal", "seal self-edits by m-x", examples, kind="dream", cycle_id="c-x",
                           strategy="seal")
    ws.registry.add_dataset(dataset)
    candidate = ModelRecord(id="m-x", status="candidate", datasets=[dataset.hash])
    return root, ws, dataset, candidate


def test_gate_waits_for_a_review_then_judges_by_its_acceptance(reviewed_setup) -> None:
    root, ws, dataset, candidate = reviewed_setup
    with pytest.raises(ReverieError, match=f"reverie data review {dataset.hash[:12]} --sample 3"):
        review_reasons(ws, candidate, ws.config.gate)
    assert review(root, dataset.hash[:12], "a\na\n", sample=2).returncode == 0
    with pytest.raises(ReverieError, match="was reviewed on 2 rows only"):
        review_reasons(ws, candidate, ws.config.gate)

    result = review(root, dataset.hash[:12], "a\nr\na\n")
    assert result.returncode == 0, result.stderr
    assert "Velmora fact number" in result.stdout and "67% of 3 rows accepted" in result.stdout
    assert [d.accepted for d in load_review(ws, dataset).decisions] == [True, False, True]
    [reason] = review_reasons(ws, candidate, ws.config.gate)
    assert "accepted 67% of 3 rows (at least 90% required)" in reason

    assert review(root, "demo/dream-seal", "a\nmaybe\na\na\n").returncode == 0  # a bad answer is asked again
    assert load_review(ws, dataset).acceptance == 1.0
    assert review_reasons(ws, candidate, ws.config.gate) == []


def test_the_gate_asks_for_a_review_of_dream_data_by_kind_not_by_name(reviewed_setup) -> None:
    _, ws, _, _ = reviewed_setup
    renamed = DatasetRecord("d" * 64, "self-edits, round 2", 5, "seal", kind="dream", cycle_id="c-1", strategy="seal")
    lookalike = DatasetRecord("e" * 64, "demo/dream-seal", 5, "knowledge", kind="learn", cycle_id="c-1")
    for record in (renamed, lookalike):
        ws.registry.add_dataset(record)
    gate = ws.config.gate
    with pytest.raises(ReverieError, match="self-edits, round 2 .* has not been reviewed"):
        review_reasons(ws, ModelRecord(id="m-y", status="candidate", datasets=[renamed.hash]), gate)
    assert review_reasons(ws, ModelRecord(id="m-z", status="candidate", datasets=[lookalike.hash]), gate) == []


def test_quitting_a_review_saves_nothing_and_unknown_datasets_are_named(reviewed_setup) -> None:
    root, ws, dataset, _ = reviewed_setup
    assert review(root, dataset.name, "a\nq\n").returncode == 1
    assert load_review(ws, dataset) is None
    missing = review(root, "no-such-data", "")
    assert missing.returncode == 2 and "'no-such-data' is neither a dataset name nor a hash prefix" in missing.stderr
    assert find_dataset(ws, dataset.hash[:8]).hash == dataset.hash
