"""Gate: run the suites on the candidate and the current release, apply the thresholds, return a verdict.

The Gate only decides and writes the model card; the cycle moves the release pointer.
"""

from __future__ import annotations

from dataclasses import dataclass

from reverie.config import GateConfig
from reverie.data.datasets import save_dataset
from reverie.data.replay import REPLAY_PREFIX, replay_examples
from reverie.engines.suites import Suites
from reverie.model_card import render_model_card
from reverie.phases.base import PhaseContext, PhaseResult


@dataclass
class Verdict:
    release: bool
    reasons: list[str]  # every failed check; empty on release


def decide(candidate: dict[str, float], reference: dict[str, float], gate: GateConfig) -> Verdict:
    """Dual thresholds: absolute floors, and the largest regression allowed against the current release."""
    reasons = []
    if candidate["knowledge_accuracy"] < gate.knowledge_min_accuracy:
        reasons.append(
            f"knowledge accuracy {candidate['knowledge_accuracy']:.3f} < floor {gate.knowledge_min_accuracy:.3f}"
        )
    if candidate["general_accuracy"] < gate.general_min_accuracy:
        reasons.append(f"general accuracy {candidate['general_accuracy']:.3f} < floor {gate.general_min_accuracy:.3f}")
    for suite, allowed in (("general", gate.max_general_regression), ("knowledge", gate.max_knowledge_regression)):
        drop = reference[f"{suite}_accuracy"] - candidate[f"{suite}_accuracy"]
        if drop > allowed + 1e-9:
            reasons.append(f"{suite} accuracy regressed by {drop:.3f} against the release (allowed {allowed:.3f})")
    return Verdict(release=not reasons, reasons=reasons)


class Gate:
    name = "gate"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        registry = ctx.workspace.registry
        candidate = ctx.candidate()
        reference = registry.get_model(registry.get_alias() or ctx.cycle.base_model_id)
        suites = Suites(ctx.workspace)
        reference_scores = suites.scores(reference)
        candidate_scores = suites.scores(candidate)
        verdict = decide(candidate_scores, reference_scores, ctx.workspace.config.gate)
        card = render_model_card(
            ctx.workspace, candidate, verdict.release, verdict.reasons, candidate_scores, reference_scores,
            suites.knowledge.name, len(suites.general),
        )
        ctx.workspace.write_text_atomic(ctx.workspace.cards_dir / f"{candidate.id}.md", card)
        failed = suites.failed_questions(candidate)
        replay = replay_examples(suites.knowledge, failed)
        new_datasets = []
        if replay:  # next cycles' Learn replays the material behind what this candidate got wrong
            new_datasets.append(save_dataset(ctx.workspace, f"{REPLAY_PREFIX}{ctx.cycle.id}",
                                             f"gate failures of {candidate.id}", replay))
        return PhaseResult(
            outputs={
                "model": candidate.id,
                "verdict": "release" if verdict.release else "reject",
                "reasons": verdict.reasons,
                "reference": reference.id,
                "candidate_scores": candidate_scores,
                "reference_scores": reference_scores,
                "artifacts": [d.hash for d in new_datasets],
            },
            metrics={f"candidate_{k}": v for k, v in candidate_scores.items()}
            | {f"reference_{k}": v for k, v in reference_scores.items()}
            | {"failed_questions": float(len(failed)), "replay_examples": float(len(replay))},
            new_datasets=new_datasets,
        )
