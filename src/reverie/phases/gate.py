"""Gate: run the suites on the candidate and the current release, decide (engines/release_decision.py), write the card.

The Gate only decides and writes the model card; the cycle moves the release pointer.
"""

from __future__ import annotations

from reverie.config import THRESHOLD_SECTIONS, GateConfig
from reverie.data.replay import replay_examples, save_replay
from reverie.data.review import load_review
from reverie.engines.preference_judge import judge_record
from reverie.engines.release_decision import Verdict, decide
from reverie.engines.suites import SuiteRunner, flat_means
from reverie.errors import ReverieError
from reverie.memory.store import recalled_documents
from reverie.metrics import suite_of
from reverie.model_card import render_model_card
from reverie.phases.base import PhaseContext, PhaseResult
from reverie.phases.outputs import DreamOutput, GateVerdict, PhaseOutput
from reverie.registry import ModelRecord
from reverie.reward_models import read_report
from reverie.workspace import Workspace


def review_reasons(ws: Workspace, candidate: ModelRecord, gate: GateConfig) -> list[str]:
    """With gate.require_review, every Dream dataset the candidate trained on must be reviewed and accepted.
    An unreviewed one stops the Gate (the cycle resumes after the review) rather than rejecting the candidate."""
    if not gate.require_review:
        return []
    reasons = []
    for dataset in (ws.registry.get_dataset(h) for h in candidate.datasets):
        if dataset.kind != "dream":
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


def judge_reasons(ws: Workspace, dream: PhaseOutput | None) -> list[str]:
    """The preference judge must not be a reward model the candidate was optimised against (one a kept Dream
    strategy recorded, or the one behind align.grpo.reward_alias), nor share one's training split (read from the
    reward models' cards): a win rate by such a judge rewards the policy for exploiting it."""
    spec = ws.config.eval.preference_judge
    judge = judge_record(ws, spec)
    if judge is None:
        return []
    policy_alias = ws.config.align.grpo.reward_alias
    optimised = {s.reward_model for s in dream.kept() if s.reward_model} if isinstance(dream, DreamOutput) else set()
    behind_alias = ws.registry.get_alias(policy_alias)
    why = []
    if judge.id in optimised:
        why.append("the candidate was optimised against it in this cycle's Dream")
    if judge.id == behind_alias:
        why.append(f"it is the policy's reward model (alias {policy_alias!r})")
    split = training_split(ws, judge.id)
    others = (optimised | {behind_alias}) - {None, judge.id}
    same = sorted(m for m in others if split and training_split(ws, m) == split)
    if same:
        why.append(f"it was trained on the {split} split of the preference pairs, like {', '.join(same)}")
    if not why:
        return []
    return [f"preference: the judge {judge.id} (eval.preference_judge {spec!r}) must not be the reward model the "
            f"policy was optimised against: {'; '.join(why)}. Train a judge on the judge split with `reverie rm "
            f"train --alias {spec}`; the preference suite did not run"]


def training_split(ws: Workspace, model_id: str) -> str | None:
    """The preference split a reward model learned from, as its card records it (None: not recorded)."""
    report = read_report(ws, model_id)
    return report.training.split if report and report.training else None


def without_suite(gate: GateConfig, suite: str) -> GateConfig:
    """The thresholds, less those on one suite's metrics (a suite that could not run is a reason of its own)."""
    return gate.model_copy(update={section: {m: v for m, v in getattr(gate, section).items() if suite_of(m) != suite}
                                   for section in THRESHOLD_SECTIONS})


class Gate:
    name = "gate"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        ws = ctx.workspace
        registry = ws.registry
        candidate = ctx.candidate()
        reviewed = review_reasons(ws, candidate, ws.config.gate)
        reference = registry.get_model(registry.get_alias() or ctx.cycle.base_model_id)
        knowledge = ctx.inputs.knowledge
        runner = SuiteRunner(ws, knowledge, opponent=reference)
        suites, gate = list(ws.config.eval.suites), ws.config.gate
        refused = judge_reasons(ws, ctx.handoff.get("dream")) if "preference" in suites else []
        if refused:
            suites.remove("preference")
            gate = without_suite(gate, "preference")
        reference_reports = runner.reports(reference, suites)
        candidate_reports = runner.reports(candidate, suites)
        verdict = decide(candidate_reports, reference_reports, gate, reference.id)
        if reviewed or refused:
            verdict = Verdict(release=False, reasons=verdict.reasons + reviewed + refused, notes=verdict.notes,
                              overridable=verdict.overridable)
        judge = runner.preference_judge_identity() if "preference" in candidate_reports else None
        card = render_model_card(ws, candidate, verdict, candidate_reports, reference_reports, judge)
        ws.write_text_atomic(ws.cards_dir / f"{candidate.id}.md", card)
        new_datasets, failed, replay, recalled = [], [], [], []
        if "knowledge" in candidate_reports:
            correct = {int(i): v == 1.0 for i, v in candidate_reports["knowledge"].values("accuracy").items()}
            failed = sorted(i for i, ok in correct.items() if not ok)
            replay = replay_examples(knowledge, failed)
            recalled = recalled_documents(knowledge, correct)  # they leave memory if this candidate is released
        if replay:  # next cycles' Learn replays the material behind what this candidate got wrong
            new_datasets.append(save_replay(ws, ctx.cycle.id, candidate.id, replay))
        candidate_scores, reference_scores = flat_means(candidate_reports), flat_means(reference_reports)
        return PhaseResult(
            GateVerdict(
                model=candidate.id, verdict="release" if verdict.release else "reject", reasons=verdict.reasons,
                notes=verdict.notes, overridable=verdict.overridable, reference=reference.id,
                candidate_scores=candidate_scores, reference_scores=reference_scores, recalled_memory=recalled,
                replay=new_datasets[0].hash if new_datasets else None,
            ),
            metrics={f"candidate_{k}": v for k, v in candidate_scores.items() if "/" not in k}
            | {f"reference_{k}": v for k, v in reference_scores.items() if "/" not in k}
            | {"failed_questions": float(len(failed)), "replay_examples": float(len(replay)),
               "memory_recalled": float(len(recalled))},
            new_datasets=new_datasets,
        )
