"""The registry: what exists (models, datasets, cycles, phase runs, metrics) and how it is related."""

from reverie.registry.entities import (Cycle, DatasetKind, DatasetRecord, LiveCounts, ModelRecord, PhaseRun,
                                       ReleaseEvent, RhythmRun, ServingDecision)
from reverie.registry.sqlite_store import SQLiteRegistry
from reverie.registry.store import GENERATOR_ALIAS, JUDGE_ALIAS, RELEASE_ALIAS, REWARD_ALIAS, RegistryStore

__all__ = [
    "GENERATOR_ALIAS", "JUDGE_ALIAS", "RELEASE_ALIAS", "REWARD_ALIAS", "Cycle", "DatasetKind", "DatasetRecord",
    "LiveCounts", "ModelRecord", "PhaseRun",
    "RegistryStore", "ReleaseEvent", "RhythmRun", "SQLiteRegistry", "ServingDecision",
]
