"""One JSON-able overview of a workspace, read from the registry: the dashboard serves it and the
static report renders it."""

from __future__ import annotations

from reverie.model_card import lineage
from reverie.phases.outputs import CompressOutput, GateVerdict, read_as
from reverie.workspace import Workspace

RHYTHM_RUNS_SHOWN = 50  # the newest rhythm runs and skips on the page


def pareto_front(variants: list[dict]) -> list[dict]:
    """Each variant marked `front` when no other is at least as accurate and as fast, and better in one."""
    def dominates(a: dict, b: dict) -> bool:
        return (a["accuracy"] >= b["accuracy"] and a["seconds"] <= b["seconds"]
                and (a["accuracy"] > b["accuracy"] or a["seconds"] < b["seconds"]))

    return [v | {"front": not any(dominates(other, v) for other in variants)} for v in variants]


def front_variants(output: CompressOutput) -> list[dict]:
    """Every variant of every Compress strategy, each with the strategy that made it. A record from before the
    front was measured (name, accuracy, seconds, kept) has no reason of its own: a kept one takes its strategy's."""
    return [variant.model_dump() | {"strategy": variant.strategy or outcome.strategy,
                                    "reason": variant.reason or (outcome.reason if variant.kept else "")}
            for outcome in output.strategies for variant in outcome.variants]


def overview(ws: Workspace) -> dict:
    """Everything the dashboard and the static report show, as JSON: one source for both."""
    registry = ws.registry
    release = registry.get_alias()
    cycles = []
    compress = scores = None
    for cycle in registry.list_cycles():
        runs = {run.phase: run for run in registry.phase_runs(cycle.id) if run.status == "finished"}
        gate = read_as(runs["gate"], GateVerdict) if "gate" in runs else None
        if gate and gate.model == release:
            scores = release_scores(gate)
        cycles.append({
            "id": cycle.id, "started_at": cycle.started_at, "outcome": cycle.outcome, "model": cycle.result_model_id,
            "scores": {k: v for k, v in (gate.candidate_scores if gate else {}).items() if "/" not in k},
            "reasons": gate.reasons if gate else [],
        })
        if "compress" in runs:
            run = runs["compress"]
            output = read_as(run, CompressOutput)
            compress = {"cycle": cycle.id, "merged": any(s.strategy == "merge" for s in output.kept()),
                        "metrics": run.metrics, "reason": output.reason,
                        "strategies": [{"strategy": s.strategy, "kept": s.kept, "reason": s.reason}
                                       for s in output.strategies],
                        "variants": pareto_front(front_variants(output))}
    chain = []
    if release:
        for record in lineage(ws, registry.get_model(release)):
            datasets = [registry.get_dataset(h) for h in record.datasets]
            chain.append({"id": record.id, "status": record.status, "phase": record.phase, "cycle": record.cycle_id,
                          "datasets": [{"name": d.name, "hash": d.hash[:12], "rows": d.rows, "source": d.source}
                                       for d in datasets]})
    events = [{"action": e.action, "model": e.model_id, "at": e.at, "reason": e.reason}
              for e in registry.release_events()]
    live = [{"action": d.action, "model": d.model_id, "against": d.against_id, "at": d.at, "reason": d.reason}
            for d in registry.serving_decisions()]
    rhythm_runs = [{"rhythm": r.rhythm, "slot": r.slot, "due": r.scheduled_for, "clock": r.clock, "status": r.status,
                    "at": r.started_at, "cycle": r.cycle_id, "detail": r.detail}
                   for r in registry.rhythm_runs()[-RHYTHM_RUNS_SHOWN:]]
    return {"release": release, "events": events, "cycles": cycles, "compress": compress, "lineage": chain,
            "release_scores": scores, "live_decisions": live, "rhythm_runs": rhythm_runs}


def release_scores(gate: GateVerdict) -> dict:
    """The Gate's scores of the release beside those of the model it replaced (preference.win_rate among them:
    the release against its predecessor)."""
    return {"model": gate.model, "reference": gate.reference,
            "scores": [{"metric": metric, "value": value, "reference": gate.reference_scores.get(metric)}
                       for metric, value in sorted(gate.candidate_scores.items()) if "/" not in metric]}
