"""Retention (`reverie gc`) on a workspace that ran four cycles on the tiny model: release, reject, reject, release.
Releases and their lineage survive and load; the newest N unreleased cycles keep their versions; a dry run deletes
nothing; a kill at any point leaves a registry whose every kept model loads, and the next gc finishes the job."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reverie.cycle import run_cycle
from reverie.engines.models import derived_caches, load_version
from reverie.errors import ReverieError
from reverie.model_card import lineage
from reverie.registry import Cycle
from reverie.retention import collect
from reverie.workspace import Workspace

from conftest import make_workspace, reverie

REJECT = ["gate.capability.knowledge.accuracy=0.99"]  # a floor the tiny random model never reaches


@pytest.fixture(scope="module")
def four_cycles(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("gc") / "ws", tiny_model_dir, dream={"enabled": False})
    for overrides in ([], REJECT, REJECT, []):
        workspace = Workspace.open(root, overrides)
        run_cycle(workspace)
        workspace.registry.close()
    return root


@pytest.fixture
def workspace(four_cycles: Path, tmp_path: Path) -> Workspace:
    """A copy of the four-cycle workspace for one test to change."""
    return Workspace.open(Path(shutil.copytree(four_cycles, tmp_path / "ws")))


def cycles_by_outcome(workspace: Workspace) -> tuple[list[Cycle], list[Cycle]]:
    cycles = workspace.registry.list_cycles()
    return [c for c in cycles if c.outcome == "released"], [c for c in cycles if c.outcome == "rejected"]


def assert_every_kept_model_loads(workspace: Workspace) -> None:
    for record in workspace.registry.list_models():
        if record.status != "removed":
            for artifact in (record.weights, record.adapter, *record.stack):
                if artifact:
                    workspace.artifacts.path(artifact)  # raises if the file is gone
            load_version(workspace, record)


def test_gc_keeps_every_release_and_its_lineage_and_they_load(workspace: Workspace) -> None:
    registry = workspace.registry
    _, rejected = cycles_by_outcome(workspace)
    removal = collect(workspace, keep_candidates=0)
    assert removal.models and removal.bytes_freed > 0
    releases = {e.model_id for e in registry.release_events()}
    assert len(releases) == 3  # the base and two released candidates
    for model_id in releases:
        record = registry.get_model(model_id)
        load_version(workspace, record)
        chain = lineage(workspace, record)
        assert all(m.status != "removed" for m in chain)
        card = workspace.cards_dir / f"{model_id}.md"
        if record.cycle_id:  # the Gate wrote a card; every model in its lineage table is in the registry
            table = card.read_text().split("## Lineage")[1].split("## Datasets")[0]
            listed = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| m-")]
            assert listed == [m.id for m in chain]
    # the datasets every version trained on stay, removed versions' too: their lineage still reads
    for record in registry.list_models():
        for dataset in record.datasets:
            workspace.artifacts.path(registry.get_dataset(dataset).hash)
    assert {m.cycle_id for m in registry.list_models() if m.status == "removed"} == {c.id for c in rejected}
    assert_every_kept_model_loads(workspace)


def test_the_newest_candidates_survive_and_older_ones_go_with_their_bytes(workspace: Workspace) -> None:
    registry = workspace.registry
    _, (older, newer) = cycles_by_outcome(workspace)
    made_by = {cycle.id: [m for m in registry.list_models() if m.cycle_id == cycle.id] for cycle in (older, newer)}
    own = {h for m in made_by[older.id] for h in (m.weights, m.adapter) if h}
    shared = {h for m in registry.list_models() if m.cycle_id != older.id for h in (m.weights, m.adapter, *m.stack)}
    sizes = {h: sum(f.stat().st_size for f in workspace.artifacts.path(h).rglob("*") if f.is_file())
             for h in own - shared}
    assert collect(workspace, keep_candidates=5, dry_run=True).models == []  # more kept than there are
    removal = collect(workspace, keep_candidates=1)
    assert removal.kept_cycles == [newer.id]
    assert sorted(removal.models) == sorted(m.id for m in made_by[older.id])
    assert {registry.get_model(m.id).status for m in made_by[older.id]} == {"removed"}
    assert {registry.get_model(m.id).status for m in made_by[newer.id]} == {"candidate", "rejected"}
    assert sizes and removal.artifacts == sizes  # exactly the older candidates' own weights, with their bytes
    assert not set(sizes) & workspace.artifacts.all_hashes()
    with pytest.raises(ReverieError, match="removed by `reverie gc`"):
        load_version(workspace, registry.get_model(older.result_model_id))
    assert_every_kept_model_loads(workspace)
    assert collect(workspace, keep_candidates=1).bytes_freed == 0  # nothing left to do


def test_dry_run_reports_the_same_and_deletes_nothing(workspace: Workspace) -> None:
    registry = workspace.registry
    before = (workspace.artifacts.all_hashes(), [(m.id, m.status) for m in registry.list_models()])
    planned = collect(workspace, keep_candidates=0, dry_run=True)
    assert planned.models and planned.artifacts
    assert (workspace.artifacts.all_hashes(), [(m.id, m.status) for m in registry.list_models()]) == before
    done = collect(workspace, keep_candidates=0)
    assert (done.models, done.artifacts, done.caches) == (planned.models, planned.artifacts, planned.caches)


def test_caches_derived_from_removed_versions_go_with_them(workspace: Workspace) -> None:
    registry = workspace.registry
    _, (older, _) = cycles_by_outcome(workspace)
    doomed = registry.get_model(older.result_model_id)
    kept = registry.get_model(registry.get_alias())
    for record in (doomed, kept):  # what model.runtime llama.cpp would have written for each
        runtime = derived_caches(workspace, record)[1]
        runtime.parent.mkdir(parents=True, exist_ok=True)
        runtime.write_bytes(b"gguf" * 100)
    leftover = workspace.cache_dir / f"learn-job-{older.id}"  # a launched Learn's folder of a closed cycle
    leftover.mkdir()
    (leftover / "examples.jsonl").write_text("{}\n")
    removal = collect(workspace, keep_candidates=0)
    assert not derived_caches(workspace, doomed)[1].exists() and not leftover.exists()
    assert derived_caches(workspace, kept)[1].exists()
    assert removal.caches[str(derived_caches(workspace, doomed)[1].relative_to(workspace.root))] == 400


# Run gc in a child process and kill it (os._exit, as SIGKILL would) at one point:
# commit: right after the registry marks are committed, before any file is deleted;
# delete: mid-delete, after the first artifact was renamed into staging and before it is deleted.
KILLED_GC = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    import reverie.artifacts
    from reverie.registry import SQLiteRegistry
    from reverie.retention import collect
    from reverie.workspace import Workspace

    if sys.argv[2] == "commit":
        remove = SQLiteRegistry.remove_models
        def remove_then_die(self, ids):
            remove(self, ids)
            os._exit(9)
        SQLiteRegistry.remove_models = remove_then_die
    else:
        rmtree = shutil.rmtree
        def die_mid_delete(path, *args, **kwargs):
            if Path(path).name.startswith("removed-") and Path(path).exists():
                os._exit(9)
            rmtree(path, *args, **kwargs)
        reverie.artifacts.shutil = type("shutil", (), {"rmtree": staticmethod(die_mid_delete)})
    collect(Workspace.open(Path(sys.argv[1])), keep_candidates=0)
    sys.exit("gc finished: the kill never came")
""")


@pytest.mark.parametrize("point", ["commit", "delete"])
def test_a_gc_killed_at_any_point_leaves_a_consistent_registry_and_the_next_finishes(
        workspace: Workspace, point: str) -> None:
    killed = subprocess.run([sys.executable, "-c", KILLED_GC, str(workspace.root), point], capture_output=True,
                            text=True)
    assert killed.returncode == 9, killed.stderr
    registry = workspace.registry
    removed = [m for m in registry.list_models() if m.status == "removed"]
    assert removed  # the marks were committed before anything was deleted
    assert_every_kept_model_loads(workspace)
    garbage = workspace.artifacts.all_hashes() - registry.referenced_artifacts()
    assert garbage or point == "delete"
    rerun = collect(workspace, keep_candidates=0)
    assert rerun.models == [] and set(rerun.artifacts) == garbage
    assert rerun.bytes_freed > 0  # what the killed run left: unreferenced artifacts, or a half-deleted one in staging
    assert workspace.artifacts.all_hashes() <= registry.referenced_artifacts()
    assert not any(workspace.artifacts.staging_root.iterdir())
    assert_every_kept_model_loads(workspace)


def test_gc_from_the_cli_reports_bytes_and_refuses_while_a_cycle_runs(workspace: Workspace) -> None:
    ws = str(workspace.root)
    with workspace.cycle_lock():  # another process runs a cycle
        refused = reverie("gc", "-w", ws, check=False)
    assert refused.returncode == 2 and "gc deletes nothing while a cycle" in refused.stderr
    assert not [m for m in workspace.registry.list_models() if m.status == "removed"]
    dry = reverie("gc", "-w", ws, "--keep-candidates", "0", "--dry-run").stdout
    assert "would remove 4 candidate version(s)" in dry and "would free" in dry
    done = reverie("gc", "-w", ws, "--keep-candidates", "0").stdout
    assert "removed 4 candidate version(s)" in done
    freed = int(re.search(r"\((\d+) bytes\)", done)[1])
    assert freed == int(re.search(r"\((\d+) bytes\)", dry)[1]) > 0
    lineage_text = reverie("lineage", next(m.id for m in workspace.registry.list_models() if m.status == "removed"),
                           "-w", ws).stdout
    assert "(removed" in lineage_text  # a removed version's record still reads


def test_bad_retention_inputs_are_named(workspace: Workspace) -> None:
    ws = str(workspace.root)
    negative = reverie("gc", "-w", ws, "--keep-candidates", "-1", check=False)
    assert negative.returncode == 2 and "--keep-candidates -1: give 0 or more" in negative.stderr
    config = reverie("gc", "-w", ws, "--set", "retention.keep_candidates=-2", check=False)
    assert config.returncode == 2 and "retention.keep_candidates" in config.stderr
    assert "Traceback" not in negative.stderr + config.stderr
