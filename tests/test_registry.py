"""Registry, artifact store and release pointer: atomic moves, rollback, garbage collection, migrations."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sqlite3
import time
from pathlib import Path

import pytest

from reverie.artifacts import ArtifactStore
from reverie.cycle import rollback
from reverie.errors import ReverieError
from reverie.phases.outputs import GateVerdict, read_as, read_output
from reverie.registry import Cycle, DatasetRecord, ModelRecord, PhaseRun, SQLiteRegistry
from reverie.workspace import Workspace

from conftest import reverie


def model(model_id: str, parent: str | None = None, status: str = "candidate") -> ModelRecord:
    return ModelRecord(id=model_id, status=status, parent_id=parent, created_at=time.time())


def test_a_write_commits_while_another_connection_is_in_the_middle_of_a_read(tmp_path: Path) -> None:
    # The server reads the release pointer while a cycle writes. In WAL mode the write commits under an open read,
    # and the reader keeps the snapshot it started with; a rollback journal would lock the write out.
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    registry.add_model(model("m-1"))
    reader = sqlite3.connect(tmp_path / "r.sqlite", timeout=0, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM models").fetchone()[0] == 1
    registry.add_model(model("m-2"))
    assert reader.execute("SELECT count(*) FROM models").fetchone()[0] == 1
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM models").fetchone()[0] == 2
    reader.close()


def test_lineage_and_datasets_round_trip(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    registry.add_model(model("m-base", status="base"))
    child = model("m-child", parent="m-base")
    child.datasets = ["b" * 64, "a" * 64]
    registry.add_model(child)
    loaded = registry.get_model("m-child")
    assert loaded.parent_id == "m-base"
    assert loaded.datasets == ["a" * 64, "b" * 64]


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def dataset(name: str, kind: str, cycle_id: str | None = None, **fields) -> DatasetRecord:
    return DatasetRecord(digest(name), name, 1, "test", time.time(), kind=kind, cycle_id=cycle_id, **fields)


def test_dataset_kind_cycle_and_strategy_are_stored_and_read_back(tmp_path: Path) -> None:
    record = dataset("any label at all", "dream", "c-1", strategy="seal")
    SQLiteRegistry(tmp_path / "r.sqlite").add_dataset(record)
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    assert registry.get_dataset(record.hash) == record and registry.list_datasets() == [record]


def test_list_datasets_filters_by_kind_and_cycle(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "r.sqlite")
    pool, first, second, feedback = (dataset("p", "pool"), dataset("r1", "replay", "c-1"),
                                     dataset("r2", "replay", "c-2"), dataset("f2", "feedback", "c-2"))
    for record in (pool, first, second, feedback):
        registry.add_dataset(record)
    assert registry.list_datasets() == [pool, first, second, feedback]
    assert registry.list_datasets(kind="replay") == [first, second]
    assert registry.list_datasets(cycle_id="c-2") == [second, feedback]
    assert registry.list_datasets(kind="replay", cycle_id="c-2") == [second]
    assert registry.list_datasets(kind="learn") == []


# The datasets and phase_runs tables as a registry written before datasets had a kind has them.
OLD_SCHEMA = """
CREATE TABLE datasets (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, rows INTEGER NOT NULL, source TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE phase_runs (
    id TEXT PRIMARY KEY, cycle_id TEXT NOT NULL, phase TEXT NOT NULL, status TEXT NOT NULL, inputs TEXT NOT NULL,
    outputs TEXT NOT NULL, metrics TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, wall_s REAL
);
"""


def old_registry(path: Path, datasets: dict[str, str], runs: list[tuple[str, str, dict]] = ()) -> None:
    """A registry file in the old schema with datasets {name: source} and finished runs (cycle, phase, outputs)."""
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.executemany("INSERT INTO datasets VALUES (?, ?, 1, ?, ?)",
                     [(digest(name), name, source, float(i)) for i, (name, source) in enumerate(datasets.items())])
    conn.executemany("INSERT INTO phase_runs VALUES (?, ?, ?, 'finished', '{}', ?, '{}', ?, ?, 1.0)",
                     [(f"r-{i}", cycle, phase, json.dumps(outputs), float(i), float(i))
                      for i, (cycle, phase, outputs) in enumerate(runs)])
    conn.commit()
    conn.close()


def test_migration_gives_old_datasets_their_kind_cycle_and_strategy_from_their_names(tmp_path: Path) -> None:
    expected = {  # name: source, (kind, cycle, strategy)
        "pool/facts": ("ingest facts.txt from team (tier 3, internal)", ("pool", None, None)),
        "pool/learn": ("pool.json", ("learn", "c-1", None)),  # a knowledge drop named 'pool', not an ingest
        "redteam/v1": ("red-team import of advbench.csv", ("redteam", None, None)),
        "replay/c-1": ("gate failures of m-1", ("replay", "c-1", None)),
        "replay/c-1/feedback": ("serving feedback: 2 thumbs-down, 1 trained on", ("feedback", "c-1", None)),
        "demo/dream-votes": ("self-consistency", ("dream", "c-1", "self-consistency")),  # Dream's first name
        "demo/dream-seal-quarantine": ("quarantine", ("quarantine", "c-2", "seal")),
        "demo/dream-seal": ("seal self-edits by m-2", ("dream", "c-2", "seal")),
    }
    runs = [  # the cycle of a Learn or Dream dataset was never in its name: the run that output it says
        ("c-1", "learn", {"model": "m-1", "dataset": digest("pool/learn"), "artifacts": [digest("pool/learn")]}),
        ("c-1", "dream", {"model": "m-1", "dataset": digest("demo/dream-votes"), "artifacts": []}),
        ("c-2", "dream", {"model": "m-2", "dataset": digest("demo/dream-seal"),
                          "artifacts": [digest("demo/dream-seal-quarantine")]}),
    ]
    path = tmp_path / "r.sqlite"
    old_registry(path, {name: source for name, (source, _) in expected.items()}, runs)
    migrated = {d.name: (d.kind, d.cycle_id, d.strategy) for d in SQLiteRegistry(path).list_datasets()}
    assert migrated == {name: fields for name, (_, fields) in expected.items()}

    registry = SQLiteRegistry(path)  # opened again: nothing left to migrate, and new rows fit the added columns
    new = dataset("a label", "learn", "c-3")
    registry.add_dataset(new)
    assert registry.list_datasets(cycle_id="c-3") == [new]
    assert [d.name for d in registry.list_datasets(kind="dream")] == ["demo/dream-votes", "demo/dream-seal"]


def test_migration_stops_at_a_name_it_cannot_read_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    old_registry(path, {"pool/facts": "ingest facts.txt from team (tier 3, internal)", "my data": "by hand"})
    with pytest.raises(ReverieError, match="dataset 'my data' .* its kind cannot be told"):
        SQLiteRegistry(path)
    conn = sqlite3.connect(path)
    assert "kind" not in {row[1] for row in conn.execute("PRAGMA table_info(datasets)")}
    conn.close()


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
    run = PhaseRun("r-1", "c-1", "learn", "running", {"model": "m-base"}, started_at=time.time() - 5)
    registry.start_phase(run)
    registry.finish_phase(run, {"model": "m-new"}, ["ab" * 32], {"loss": 1.5}, [model("m-new")])
    (finished,) = registry.phase_runs("c-1")
    assert finished.status == "finished" and finished.metrics == {"loss": 1.5}
    assert 5 <= finished.wall_s < 60  # timed from the run's start, five seconds ago
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


def gated_release(registry: SQLiteRegistry, model_id: str, reference: str, scores: dict[str, float],
                  reference_scores: dict[str, float] | None = None) -> None:
    """A cycle whose Gate scored `model_id` (and its reference) and released it."""
    cycle_id = f"c-{model_id}"
    registry.start_cycle(Cycle(cycle_id, "running", reference, "cfg", time.time()))
    run = PhaseRun(f"r-{model_id}", cycle_id, "gate", "running", {"model": model_id}, started_at=time.time())
    registry.start_phase(run)
    verdict = GateVerdict(model=model_id, verdict="release", reasons=[], reference=reference,
                          candidate_scores=scores, reference_scores=reference_scores or {})
    registry.finish_phase(run, verdict.model_dump(mode="json"), [], {}, [model(model_id, parent=reference)])
    registry.close_cycle(cycle_id, "released", model_id, True)


@pytest.fixture
def four_releases(tmp_path: Path) -> Workspace:
    """m-1 (base, bootstrapped) then m-2, m-3, m-4 released, each scored by its Gate; m-4 is the release."""
    workspace = Workspace.init(tmp_path)
    registry = workspace.registry
    registry.bootstrap(model("m-1", status="base"))
    gated_release(registry, "m-2", "m-1", {"knowledge.accuracy": 0.5, "redteam.attack_success": 0.2},
                  {"knowledge.accuracy": 0.1, "general.accuracy": 0.4})
    gated_release(registry, "m-3", "m-2", {"knowledge.accuracy": 0.875, "redteam.attack_success": 0.4})
    gated_release(registry, "m-4", "m-3", {"knowledge.accuracy": 0.9})
    return workspace


def test_rollback_to_best_picks_the_best_earlier_release_and_records_why(four_releases: Workspace) -> None:
    registry = four_releases.registry
    assert rollback(four_releases, to="best", metric="knowledge.accuracy") == ("m-4", "m-3")
    event = registry.release_events()[-1]
    assert (event.action, event.model_id, registry.get_alias()) == ("rollback", "m-3", "m-3")
    assert event.reason.startswith("best by knowledge.accuracy (0.875) of 3 earlier release(s)")
    assert rollback(four_releases) == ("m-3", "m-2")  # the line goes on from where the rollback left it


def test_rollback_to_best_of_a_lower_is_better_metric_and_among_the_releases_it_scored(
        four_releases: Workspace) -> None:
    assert rollback(four_releases, to="best", metric="redteam.attack_success") == ("m-4", "m-2")
    assert rollback(four_releases, to="best", metric="general.accuracy") == ("m-2", "m-1")  # only m-1 has it


def test_rollback_to_a_model_id_and_the_reason_a_caller_gives(four_releases: Workspace) -> None:
    assert rollback(four_releases, to="m-2", reason="live alarm: error rate") == ("m-4", "m-2")
    assert four_releases.registry.release_events()[-1].reason == "to m-2, chosen by id; live alarm: error rate"
    assert rollback(four_releases) == ("m-2", "m-1")


def test_rollback_from_the_cli_says_which_release_and_its_score(four_releases: Workspace) -> None:
    ws = str(four_releases.root)
    done = reverie("rollback", "-w", ws, "--to", "best", "--metric", "knowledge.accuracy").stdout
    assert "release is now m-3 (was m-4): best by knowledge.accuracy (0.875)" in done
    refused = reverie("rollback", "-w", ws, "--to", "best", "--metric", "nope", check=False)
    assert refused.returncode == 2 and "--metric nope: no earlier release" in refused.stderr
    assert "Traceback" not in refused.stderr and four_releases.registry.get_alias() == "m-3"


@pytest.mark.parametrize("to, metric, message", [
    ("best", "nope.metric", r"--metric nope.metric: no earlier release \(m-1, m-2, m-3\) has a Gate score for it; "
                            r"their scores: general.accuracy, knowledge.accuracy, redteam.attack_success"),
    ("best", None, "--to best needs --metric NAME"),
    ("previous", "knowledge.accuracy", "ranks releases only with --to best"),
    ("m-9", None, "no model 'm-9' in the registry"),
    ("m-4", None, r"--to m-4: m-4 \(release\) is not an earlier release; the earlier releases are m-1, m-2, m-3"),
])
def test_bad_rollback_targets_are_refused_and_move_nothing(four_releases: Workspace, to: str, metric: str | None,
                                                           message: str) -> None:
    with pytest.raises(ReverieError, match=message):
        rollback(four_releases, to=to, metric=metric)
    assert four_releases.registry.get_alias() == "m-4"


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


def test_untyped_phase_outputs_of_an_old_registry_read_back_typed_and_keep_their_artifacts(tmp_path: Path) -> None:
    adapter, learned, weights, replay = (digest(name) for name in ("adapter", "pool/learn", "weights", "replay"))
    runs = [  # the shapes outputs had before they were typed
        ("c-1", "learn", {"model": "m-1", "dataset": learned, "artifacts": [adapter, learned]}),
        ("c-1", "compress", {"model": "m-2", "merged": True, "artifacts": [weights],
                             "variants": [{"name": "merged", "accuracy": 0.5, "seconds": 0.1, "kept": True}]}),
        ("c-1", "dream", {"model": "m-2", "reason": "dream.enabled is off"}),
        ("c-1", "gate", {"model": "m-2", "verdict": "reject", "reasons": ["too weak"], "notes": [],
                         "overridable": True, "reference": "m-0", "candidate_scores": {"knowledge.accuracy": 0.1},
                         "reference_scores": {}, "recalled_memory": [], "artifacts": [replay]}),
    ]
    path = tmp_path / "r.sqlite"
    old_registry(path, {"pool/learn": "pool.json"}, runs)
    registry = SQLiteRegistry(path)
    assert {adapter, learned, weights, replay} <= registry.referenced_artifacts()
    learn, compress, dream, gate = (read_output(run) for run in registry.phase_runs("c-1"))
    assert (learn.adapter, learn.dataset) == (adapter, learned)
    [merge] = compress.strategies
    assert (merge.strategy, merge.kept, merge.model, merge.weights) == ("merge", True, "m-2", weights)
    assert (dream.model, dream.strategies, dream.reason) == ("m-2", [], "dream.enabled is off")
    assert (gate.released, gate.reasons, gate.replay) == (False, ["too weak"], replay)
    assert read_as(registry.phase_runs("c-1")[3], GateVerdict).artifacts() == [replay]


def test_a_phase_output_that_does_not_validate_names_its_run(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    old_registry(path, {}, [("c-1", "gate", {"model": "m-2", "verdict": "maybe"})])
    [run] = SQLiteRegistry(path).phase_runs("c-1")
    with pytest.raises(ReverieError, match=r"phase run r-0 \(gate of cycle c-1\) has an output .*verdict"):
        read_output(run)
