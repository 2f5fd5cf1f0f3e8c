"""One JSON-able overview of a workspace, read from the registry: the dashboard serves it and the
static report renders it."""

from __future__ import annotations

from reverie.model_card import lineage
from reverie.workspace import Workspace


def pareto_front(variants: list[dict]) -> list[dict]:
    """Each variant marked `front` when no other is at least as accurate and as fast, and better in one."""
    def dominates(a: dict, b: dict) -> bool:
        return (a["accuracy"] >= b["accuracy"] and a["seconds"] <= b["seconds"]
                and (a["accuracy"] > b["accuracy"] or a["seconds"] < b["seconds"]))

    return [v | {"front": not any(dominates(other, v) for other in variants)} for v in variants]


def overview(ws: Workspace) -> dict:
    """Everything the dashboard and the static report show, as JSON: one source for both."""
    registry = ws.registry
    release = registry.get_alias()
    cycles = []
    compress = None
    for cycle in registry.list_cycles():
        runs = {run.phase: run for run in registry.phase_runs(cycle.id) if run.status == "finished"}
        gate = runs.get("gate")
        cycles.append({
            "id": cycle.id, "started_at": cycle.started_at, "outcome": cycle.outcome, "model": cycle.result_model_id,
            "scores": {k: v for k, v in (gate.outputs.get("candidate_scores", {}) if gate else {}).items()
                       if "/" not in k},
            "reasons": gate.outputs.get("reasons", []) if gate else [],
        })
        if "compress" in runs:
            run = runs["compress"]
            compress = {"cycle": cycle.id, "merged": run.outputs.get("merged"), "metrics": run.metrics,
                        "variants": pareto_front(run.outputs.get("variants", []))}
    chain = []
    if release:
        for record in lineage(ws, registry.get_model(release)):
            datasets = [registry.get_dataset(h) for h in record.datasets]
            chain.append({"id": record.id, "status": record.status, "phase": record.phase, "cycle": record.cycle_id,
                          "datasets": [{"name": d.name, "hash": d.hash[:12], "rows": d.rows, "source": d.source}
                                       for d in datasets]})
    events = [{"action": e.action, "model": e.model_id, "at": e.at, "reason": e.reason}
              for e in registry.release_events()]
    return {"release": release, "events": events, "cycles": cycles, "compress": compress, "lineage": chain}
