"""Registry, artifact store and release pointer: atomic moves, rollback, garbage collection."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reverie.artifacts import ArtifactStore
from reverie.cycle import rollback
from reverie.errors import ReverieError
from reverie.registry import Cycle, ModelRecord, PhaseRun, SQLiteRegistry
from reverie.workspace import Workspace


def model(model_id: str, parent: str | None = None, status: str = "candidate") -> ModelRecord:
    return ModelRecord(id=model_id, status=status, parent_id=parent, created_at=time.time())


def test_registry_uses_wal(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    assert registry._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_lineage_and_datasets_round_trip(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    registry.add_model(model("m-base", status="base"))
    child = model("m-child", parent="m-base")
    child.datasets = ["b" * 64, "a" * 64]
    registry.add_model(child)
    loaded = registry.get_model("m-child")
    assert loaded.parent_id == "m-base"
    assert loaded.datasets == ["a" * 64, "b" * 64]


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    with pytest.raises(ReverieError, match="no model 'm-nope'"):
        registry.get_model("m-nope")


def test_close_cycle_releases_or_rejects_atomically(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    registry.add_model(model("m-base", status="base"))
    registry.set_alias("m-base", "bootstrap")
    for cycle_id, candidate, release in (("c-1", "m-good", True), ("c-2", "m-bad", False)):
        registry.start_cycle(Cycle(cycle_id, "running", "m-base", "cfg", time.time()))
        registry.add_model(model(candidate, parent="m-base"))
        registry.close_cycle(cycle_id, "released" if release else "rejected", candidate, release)
    assert registry.get_alias() == "m-good"
    assert registry.get_model("m-good").status == "release"
    assert registry.get_model("m-bad").status == "rejected"
    assert registry.unfinished_cycle() is None


def test_finish_phase_records_models_in_the_same_transaction(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    registry.start_cycle(Cycle("c-1", "running", "m-base", "cfg", time.time()))
    run = PhaseRun("r-1", "c-1", "learn", "running", {"model": "m-base"}, started_at=time.time())
    registry.start_phase(run)
    registry.finish_phase(run, {"model": "m-new", "artifacts": ["ab" * 32]}, {"loss": 1.5}, [model("m-new")])
    (finished,) = registry.phase_runs("c-1")
    assert finished.status == "finished" and finished.metrics == {"loss": 1.5} and finished.wall_s >= 0
    assert registry.get_model("m-new").id == "m-new"
    assert "ab" * 32 in registry.referenced_artifacts()


def test_rollback_walks_back_one_release_at_a_time(tmp_path: Path) -> None:
    workspace = Workspace.init(tmp_path)
    registry = workspace.registry
    for model_id, action in (("m-1", "bootstrap"), ("m-2", "release"), ("m-3", "release")):
        registry.add_model(model(model_id, status="release"))
        registry.set_alias(model_id, action)
    assert rollback(workspace) == ("m-3", "m-2")
    assert registry.get_alias() == "m-2"
    assert rollback(workspace) == ("m-2", "m-1")
    with pytest.raises(ReverieError, match="no earlier release"):
        rollback(workspace)
    assert registry.get_alias() == "m-1"


def test_staged_artifact_appears_only_when_complete(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path / "staging")
    with pytest.raises(RuntimeError):
        with store.stage() as staged:
            (staged.path / "weights.safetensors").write_bytes(b"half")
            raise RuntimeError("killed mid-save")
    assert store.all_hashes() == set() and not any((tmp_path / "staging").iterdir())
    with store.stage() as staged:
        (staged.path / "weights.safetensors").write_bytes(b"whole")
    assert store.all_hashes() == {staged.hash}
    assert (store.path(staged.hash) / "weights.safetensors").read_bytes() == b"whole"


def test_garbage_collection_keeps_only_referenced(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path / "staging")
    hashes = []
    for content in (b"kept", b"orphan"):
        with store.stage() as staged:
            (staged.path / "f").write_bytes(content)
        hashes.append(staged.hash)
    (tmp_path / "staging" / "leftover").mkdir()
    assert store.collect_garbage({hashes[0]}) == [hashes[1]]
    assert store.all_hashes() == {hashes[0]}
    assert not any((tmp_path / "staging").iterdir())


def test_artifact_path_rejects_non_hash_names(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path / "staging")
    with pytest.raises(ReverieError, match="not an artifact hash"):
        store.path("../../etc")
