"""The registry interface. SQLite is the embedded store; a server database is another implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from reverie.errors import ReverieError
from reverie.registry.entities import (Cycle, DatasetKind, DatasetRecord, LiveCounts, ModelRecord, PhaseRun,
                                       ReleaseEvent, RhythmRun, ServingDecision)

RELEASE_ALIAS = "release"
GENERATOR_ALIAS = "generator"
REWARD_ALIAS = "reward"  # the reward model the policy is optimised against (Dream's grpo)
JUDGE_ALIAS = "judge"  # the reward model trained on a disjoint split that judges the Gate's preference suite


class RegistryStore(ABC):
    # models and lineage
    @abstractmethod
    def add_model(self, model: ModelRecord) -> None: ...

    @abstractmethod
    def bootstrap(self, model: ModelRecord) -> None:
        """Register a base model and make it the release, in one transaction."""

    @abstractmethod
    def add_generator(self, model: ModelRecord) -> None:
        """Register a self-edit generator version and point the generator alias at it, in one transaction.

        Unlike the release alias, this move is not a release event: rollback never sees it.
        """

    @abstractmethod
    def add_reward_model(self, model: ModelRecord, alias: str) -> None:
        """Register a reward model version (status "reward") and point `alias` at it, in one transaction; like
        the generator's, this move is not a release event."""

    @abstractmethod
    def get_model(self, model_id: str) -> ModelRecord: ...

    def find_model(self, model_id: str) -> ModelRecord | None:
        try:
            return self.get_model(model_id)
        except ReverieError:
            return None

    @abstractmethod
    def list_models(self) -> list[ModelRecord]: ...

    @abstractmethod
    def get_dataset(self, dataset_hash: str) -> DatasetRecord: ...

    @abstractmethod
    def add_dataset(self, dataset: DatasetRecord) -> None:
        """Register a dataset outside a phase (ingest); an already registered hash is left as it is."""

    @abstractmethod
    def list_datasets(self, kind: DatasetKind | None = None, cycle_id: str | None = None) -> list[DatasetRecord]:
        """The datasets of that kind and cycle (either left out: any), oldest first."""

    # metrics
    @abstractmethod
    def log_metrics(self, model_id: str, suite: str, values: dict[str, float]) -> None: ...

    @abstractmethod
    def get_metrics(self, model_id: str, suite: str) -> dict[str, float]: ...

    @abstractmethod
    def all_metrics(self, model_id: str) -> dict[str, dict[str, float]]:
        """suite -> {metric: value} for every suite logged for the model, oldest logged first."""

    # cycles and phase runs
    @abstractmethod
    def start_cycle(self, cycle: Cycle) -> None: ...

    @abstractmethod
    def get_cycle(self, cycle_id: str) -> Cycle: ...

    @abstractmethod
    def unfinished_cycle(self) -> Cycle | None: ...

    @abstractmethod
    def list_cycles(self) -> list[Cycle]: ...

    @abstractmethod
    def set_cycle_inputs(self, cycle_id: str, inputs: str) -> None:
        """Point a cycle at the artifact holding the inputs frozen for it."""

    @abstractmethod
    def start_phase(self, run: PhaseRun) -> None: ...

    @abstractmethod
    def finish_phase(
        self,
        run: PhaseRun,
        outputs: dict[str, Any],
        artifacts: list[str],
        metrics: dict[str, float],
        new_models: list[ModelRecord],
        new_datasets: list[DatasetRecord] = (),
    ) -> None:
        """Record a finished phase, the artifacts its outputs refer to (kept by garbage collection) and the
        models and datasets it made, in one transaction."""

    @abstractmethod
    def fail_phase(self, run_id: str, error: str) -> None: ...

    @abstractmethod
    def interrupt_running_phases(self, cycle_id: str) -> int: ...

    @abstractmethod
    def phase_runs(self, cycle_id: str) -> list[PhaseRun]: ...

    @abstractmethod
    def close_cycle(self, cycle_id: str, outcome: str, result_model_id: str, release: bool) -> None:
        """Finish a cycle: mark its result released or rejected and, on release, move the alias, atomically."""

    @abstractmethod
    def abandon_cycle(self, cycle_id: str) -> None: ...

    # the release pointer
    @abstractmethod
    def get_alias(self, name: str = RELEASE_ALIAS) -> str | None: ...

    @abstractmethod
    def set_alias(self, model_id: str, action: str, name: str = RELEASE_ALIAS, reason: str | None = None) -> None:
        """Point the alias at the model and record the move (with why, if given) as a release event."""

    @abstractmethod
    def aliases(self) -> dict[str, str]:
        """Every alias (release, generator, reward, judge, ...) and the model it points at."""

    @abstractmethod
    def override_release(self, model_id: str, reason: str) -> None:
        """Release a rejected model by a person's decision: status and alias move together, the reason is kept."""

    @abstractmethod
    def release_events(self) -> list[ReleaseEvent]: ...

    # live serving: figures per model and the decisions taken on them
    @abstractmethod
    def save_live_counts(self, counts: LiveCounts) -> None: ...

    @abstractmethod
    def live_counts(self, model_id: str) -> LiveCounts | None: ...

    @abstractmethod
    def add_serving_decision(self, decision: ServingDecision) -> None:
        """Record a decision; a canary-promote also makes its model the release (status and alias, the reason on
        the release event), in the same transaction."""

    @abstractmethod
    def serving_decisions(self) -> list[ServingDecision]:
        """Every decision, oldest first."""

    @abstractmethod
    def remove_models(self, model_ids: list[str]) -> None:
        """Mark the models removed (retention), in one transaction: their records stay for lineage, and their
        weights, adapters and stacks stop counting as referenced."""

    @abstractmethod
    def referenced_artifacts(self, assume_removed: frozenset[str] = frozenset()) -> set[str]:
        """Every artifact hash that a model, dataset, phase output or cycle's frozen inputs point to (the rest is
        garbage). A removed model's own artifacts are not referenced, not even by the phase run that made it,
        unless a model still in use shares them; `assume_removed` counts those models as removed too (a dry run)."""

    # rhythms
    @abstractmethod
    def rhythm_since(self, rhythm: str, clock: str, now: float) -> float:
        """When the rhythm was first run on that clock (`now`, recorded, the first time): slots scheduled before
        it are not owed, so a rhythm started on a Saturday does not run the whole week at once."""

    @abstractmethod
    def add_rhythm_run(self, run: RhythmRun) -> None: ...

    @abstractmethod
    def finish_rhythm_run(self, run_id: str, status: str, detail: str, cycle_id: str | None = None) -> None: ...

    @abstractmethod
    def interrupt_rhythm_runs(self, rhythm: str) -> int:
        """Mark the rhythm's runs still 'running' as interrupted (call only while holding the rhythm's lock)."""

    @abstractmethod
    def rhythm_runs(self, rhythm: str | None = None) -> list[RhythmRun]:
        """The runs and skips of that rhythm (None: every rhythm), oldest first."""
