"""The registry: what exists (models, datasets, cycles, phase runs, metrics) and how it is related."""

from reverie.registry.entities import Cycle, DatasetRecord, ModelRecord, PhaseRun, ReleaseEvent
from reverie.registry.sqlite_store import SQLiteRegistry
from reverie.registry.store import RegistryStore

__all__ = ["Cycle", "DatasetRecord", "ModelRecord", "PhaseRun", "RegistryStore", "ReleaseEvent", "SQLiteRegistry"]
