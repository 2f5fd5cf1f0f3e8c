"""Gate: run the suites on the candidate and the current release, apply the thresholds, return a verdict.

The Gate only decides and writes the model card; the cycle moves the release pointer.
"""

from __future__ import annotations

from dataclasses import dataclass

from reverie.config import GateConfig
from reverie.data.replay import replay_examples, save_replay
from reverie.data.review import load_review
from reverie.engines.suites import Suites
from reverie.model_card import render_model_card
from reverie.errors import ReverieError
from reverie.phases.base import PhaseContext, PhaseResult
from reverie.registry import ModelRecord
from reverie.workspace import Workspace


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


def review_reasons(ws: Workspace, candidate: ModelRecord, gate: GateConfig) -> list[str]:
    """With gate.require_review, every Dream dataset the candidate trained on must be reviewed and accepted.
    An unreviewed one stops the Gate (the cycle resumes after the review) rather than rejecting the candidate."""
    if not gate.require_review:
        return []
    reasons = []
    for dataset in (ws.registry.get_dataset(h) for h in candidate.datasets):
        if "/dream-" not in dataset.name:
            continue
        review = load_review(ws, dataset)
        needed = min(gate.min_reviewed_rows, dataset.rows)
        if review is None or len(review.decisions) < needed:
            done = "has not been reviewed" if review is None else f"was reviewed on {len(review.decisions)} rows only"
            raise ReverieError(
                f"gate.require_review: {dataset.name} ({dataset.hash[:12]}) {done}; run `reverie data review "
                f"{dataset.hash[:12]} --sample {needed}`, then `reverie cycle --resume`"
            )
        if review.acceptance < gate.min_review_acceptance:
            reasons.append(f"review of {dataset.name} accepted {review.acceptance:.0%} of {len(review.decisions)} "
                           f"rows (at least {gate.min_review_acceptance:.0%} required)")
    return reasons


class Gate:
    name = "gate"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        registry = ctx.workspace.registry
        candidate = ctx.candidate()
        reviewed = review_reasons(ctx.workspace, candidate, ctx.workspace.config.gate)
        reference = registry.get_model(registry.get_alias() or ctx.cycle.base_model_id)
        suites = Suites(ctx.workspace)
        reference_scores = suites.scores(reference)
        candidate_scores = suites.scores(candidate)
        verdict = decide(candidate_scores, reference_scores, ctx.workspace.config.gate)
        if reviewed:
            verdict = Verdict(release=False, reasons=verdict.reasons + reviewed)
        card = render_model_card(
            ctx.workspace, candidate, verdict.release, verdict.reasons, candidate_scores, reference_scores,
            suites.knowledge.name, len(suites.general),
        )
        ctx.workspace.write_text_atomic(ctx.workspace.cards_dir / f"{candidate.id}.md", card)
        failed = suites.failed_questions(candidate)
        replay = replay_examples(suites.knowledge, failed)
        new_datasets = []
        if replay:  # next cycles' Learn replays the material behind what this candidate got wrong
            new_datasets.append(save_replay(ctx.workspace, ctx.cycle.id, candidate.id, replay))
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
