"""Retention (`reverie gc`): which model versions keep their weights, and deleting the rest in an order that a kill
at any moment cannot break.

Kept: every model that was ever the release (its release events), what any alias or the serving canary points at,
the open cycle's models, the models of the `retention.keep_candidates` newest cycles that did not release, and
the lineage (every parent) of all of these. Datasets and frozen cycle inputs are always kept: they are the lineage
of every version, kept or removed, and small. Any other model a cycle made is marked removed: its record stays, so
lineage and cards still read, and loading it says that gc removed it.

The order makes a kill harmless: the registry marks are committed first (from then on nothing counts the removed
weights as referenced); then the caches derived from removed versions go; then every artifact nothing references
is renamed into staging (one atomic step) and deleted. A kill leaves files behind, never a record without its
files, and the next gc deletes what is left.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from reverie.engines.models import derived_caches
from reverie.errors import ReverieError
from reverie.registry import ModelRecord, RegistryStore
from reverie.workspace import Workspace

RETIRABLE = ("candidate", "rejected")  # what a cycle made and never released; base, reward and generator stay


@dataclass
class Removal:
    """What gc removed or, with `dry_run`, would remove."""

    dry_run: bool
    models: list[str]  # models marked removed by this run
    kept_cycles: list[str]  # the cycles that did not release whose versions were kept (retention.keep_candidates)
    artifacts: dict[str, int] = field(default_factory=dict)  # artifact hash -> bytes
    caches: dict[str, int] = field(default_factory=dict)  # cache path, relative to the workspace -> bytes
    staging_bytes: int = 0  # leftovers of interrupted writes and deletes

    @property
    def bytes_freed(self) -> int:
        return sum(self.artifacts.values()) + sum(self.caches.values()) + self.staging_bytes


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links not followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        total += sum((Path(folder) / name).lstat().st_size for name in files)
    return total


def _lineage_closure(models: dict[str, ModelRecord], roots: set[str]) -> set[str]:
    """The roots and every ancestor of theirs."""
    closed: set[str] = set()
    pending = [r for r in roots if r in models]
    while pending:
        model_id = pending.pop()
        if model_id not in closed:
            closed.add(model_id)
            parent = models[model_id].parent_id
            if parent in models:
                pending.append(parent)
    return closed


def kept_models(workspace: Workspace, keep_candidates: int) -> tuple[set[str], list[str]]:
    """The ids of the models whose weights stay, and the cycles that did not release whose versions are kept."""
    registry = workspace.registry
    models = {m.id: m for m in registry.list_models()}
    aliases = registry.aliases()
    released = {e.model_id for e in registry.release_events()}
    keep = released | set(aliases.values())
    if canary := workspace.config.serve.canary.model:  # the server may be serving it beside the release
        keep.add(aliases.get(canary, canary))
    made = {m.cycle_id for m in models.values() if m.status != "removed"}
    # the cycles whose candidates count: closed, never released (not even by an override), with a model still whole
    unreleased = [c.id for c in registry.list_cycles()
                  if c.status != "running" and c.result_model_id not in released and c.id in made]
    kept_cycles = unreleased[max(0, len(unreleased) - keep_candidates):] if keep_candidates else []
    cycles = set(kept_cycles)
    if open_cycle := registry.unfinished_cycle():
        cycles.add(open_cycle.id)
        keep.add(open_cycle.base_model_id)
    keep |= {m.id for m in models.values() if m.cycle_id in cycles or m.status not in (*RETIRABLE, "removed")}
    return _lineage_closure(models, keep), kept_cycles


def _cycle_leftovers(workspace: Workspace, registry: RegistryStore) -> list[Path]:
    """Learn's checkpoint and launched job folder of every closed cycle (an open one may still resume from them)."""
    return [workspace.cache_dir / name for cycle in registry.list_cycles() if cycle.status != "running"
            for name in (f"learn-{cycle.id}.pt", f"learn-job-{cycle.id}")]


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def collect(workspace: Workspace, keep_candidates: int | None = None, dry_run: bool = False) -> Removal:
    """Apply the retention policy (`keep_candidates`: default retention.keep_candidates) and delete what nothing
    needs any more; with `dry_run`, only say what that would be. Refused while a cycle runs in another process."""
    keep_n = workspace.config.retention.keep_candidates if keep_candidates is None else keep_candidates
    if keep_n < 0:
        raise ReverieError(f"--keep-candidates {keep_n}: give 0 or more (the cycles that did not release whose "
                           "versions stay)")
    with ExitStack() as held:
        try:
            held.enter_context(workspace.cycle_lock())
        except ReverieError as exc:
            raise ReverieError(f"gc deletes nothing while {exc}; run it when that has finished") from None
        return _collect(workspace, keep_n, dry_run)


def _collect(workspace: Workspace, keep_n: int, dry_run: bool) -> Removal:
    registry, store = workspace.registry, workspace.artifacts
    keep, kept_cycles = kept_models(workspace, keep_n)
    models = registry.list_models()
    newly = [m for m in models if m.status in RETIRABLE and m.cycle_id and m.id not in keep]
    result = Removal(dry_run, [m.id for m in newly], kept_cycles)
    if not dry_run and newly:
        registry.remove_models(result.models)  # committed before any file goes
    retired = {m.id for m in newly} | {m.id for m in models if m.status == "removed"}
    in_use = {path for m in models if m.id not in retired for path in derived_caches(workspace, m)}
    doomed = {path for m in models if m.id in retired for path in derived_caches(workspace, m)} - in_use
    for path in sorted(doomed | set(_cycle_leftovers(workspace, registry))):
        if path.exists() or path.is_symlink():
            result.caches[str(path.relative_to(workspace.root))] = size_of(path)
            if not dry_run:
                _delete(path)
    result.staging_bytes = sum(size_of(p) for p in store.staging_root.iterdir())
    referenced = registry.referenced_artifacts(frozenset(result.models) if dry_run else frozenset())
    garbage = sorted(store.all_hashes() - referenced)
    result.artifacts = {h: size_of(store.root / h) for h in garbage}
    if not dry_run:
        store.collect_garbage(referenced)
    return result
