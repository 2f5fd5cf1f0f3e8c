"""The phase interface and the context a cycle hands to each phase."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from reverie.cycle_inputs import CycleInputs
from reverie.phases.outputs import PhaseOutput
from reverie.registry import Cycle, DatasetRecord, ModelRecord
from reverie.workspace import Workspace, code_version


@dataclass
class PhaseResult:
    """What a phase produced: its typed output, metrics, and the models and datasets it made.

    The cycle records new models and datasets in the same transaction that marks the phase finished.
    """

    output: PhaseOutput
    metrics: dict[str, float] = field(default_factory=dict)
    new_models: list[ModelRecord] = field(default_factory=list)
    new_datasets: list[DatasetRecord] = field(default_factory=list)


@dataclass
class PhaseContext:
    workspace: Workspace
    cycle: Cycle
    inputs: CycleInputs  # frozen when the cycle started: every phase reads its knowledge from here
    handoff: dict[str, PhaseOutput]  # outputs of this cycle's finished phases, read from the registry
    memo: dict[str, Any] = field(default_factory=dict)  # what a phase's strategies share (the front's measurements)

    def candidate(self) -> ModelRecord:
        """The newest model version of this cycle (the cycle's starting model before any phase made one)."""
        model_id = self.cycle.base_model_id
        for output in self.handoff.values():
            model_id = output.model
        return self.workspace.registry.get_model(model_id)

    def new_model(self, parent: ModelRecord, phase: str, **fields: Any) -> ModelRecord:
        """A candidate version derived from parent, stamped with this cycle's config and code version."""
        values = {"weights": parent.weights, "source": parent.source, "adapter": parent.adapter,
                  "stack": list(parent.stack), "datasets": list(parent.datasets)} | fields
        if "weights" in fields and "stack" not in fields:
            values["stack"] = []  # new weights hold the parent's stack merged in
        return ModelRecord(
            id=f"m-{uuid.uuid4().hex[:10]}",
            status="candidate",
            parent_id=parent.id,
            cycle_id=self.cycle.id,
            phase=phase,
            config_hash=self.workspace.config.fingerprint(),
            code_version=code_version(),
            created_at=time.time(),
            **values,
        )


class Phase(Protocol):
    name: str

    def run(self, ctx: PhaseContext) -> PhaseResult: ...
