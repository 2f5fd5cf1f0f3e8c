"""Dream by DPO: pairs drawn by data.mix from the policy split of the cycle's preference datasets, plus pairs from
the cycle's serving feedback (a correction over the answer it corrects; a liked answer over a disliked one to the
same prompt) and pairs the candidate's own answers make with the red-team library's training half (a refusal
over its compliant answer to a harmful request; its helpful answer over a refusal for a safe look-alike, so
that alignment does not buy over-refusal). The reference is the candidate as it arrived (TRL keeps a frozen
copy of its adapter), its log-probabilities precomputed once by default (align.dpo.precompute_ref_log_probs)."""

from __future__ import annotations

import random

from reverie.data.dedup import ContaminationIndex
from reverie.data.mixing import mix_sample
from reverie.data.pool import contamination_index
from reverie.data.preference import PreferencePair, load_pairs
from reverie.data.preference_ingest import PairChecks, PairIndex, screen_pairs, uncontaminated
from reverie.data.preference_sources import feedback_pairs, redteam_pairs
from reverie.data.quality import check_text
from reverie.data.records import Rejected
from reverie.data.redteam import RedTeamItem, load_version_items
from reverie.data.splits import preference_pairs, safety_train
from reverie.engines.generation import generate
from reverie.engines.models import LoadedModel
from reverie.engines.preference_training import train_dpo
from reverie.engines.prompts import token_counter, user_prompt_ids
from reverie.engines.refusal import is_refusal
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import DREAM, DreamData, Trained, prepare_policy, register
from reverie.registry import ModelRecord


@register(DREAM, "dpo")
class DirectPreference:
    name: str

    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData:
        ws = ctx.workspace
        settings = ws.config.align.dpo
        contamination = contamination_index(ws)
        quarantined: list[Rejected] = []
        drawn, drawn_from = self._drawn_pairs(ctx, contamination, quarantined)
        own = self._redteam_pairs(ctx, loaded, quarantined) if settings.redteam_pairs else []
        own += feedback_pairs(ctx.inputs.feedback + ctx.inputs.liked)
        # Made here, so they pass ingest's steps now (tier 0: nothing to distrust in the model's own answers).
        checks = PairChecks.of(ws, token_counter(loaded.tokenizer), min_tier=0)
        screened = screen_pairs(own, PairIndex(ws.config.data.near_duplicate_threshold), checks)
        own, quarantined = screened.pairs, quarantined + screened.rejected
        pairs = drawn + own
        metrics = {"dream_pairs_drawn": float(len(drawn)),
                   "dream_pairs_redteam": float(sum(p.source == "redteam" for p in own)),
                   "dream_pairs_feedback": float(sum(p.source == "feedback" for p in own)),
                   "dream_pairs_quarantined": float(len(quarantined))}
        return DreamData(f"dpo pairs: {len(drawn)} drawn, {len(own)} from the red-team library and feedback", [],
                         metrics, quarantined, pairs=pairs, drawn_from=drawn_from)

    def _drawn_pairs(self, ctx: PhaseContext, contamination: ContaminationIndex,
                     quarantined: list[Rejected]) -> tuple[list[PreferencePair], list[str]]:
        """align.dpo.pairs pairs of the policy split, and the datasets they came from."""
        ws = ctx.workspace
        settings = ws.config.align.dpo
        pairs: list[PreferencePair] = []
        origin: dict[str, str] = {}
        for dataset in (ws.registry.get_dataset(h) for h in ctx.inputs.preference):
            # Ingest checked each pair against the evaluation items of its day; these may have changed since.
            kept, leaked = uncontaminated(preference_pairs(load_pairs(ws, dataset), "policy"), contamination)
            quarantined += leaked
            origin |= {p.id: dataset.hash for p in kept if p.id not in origin}
            pairs += kept
        if not pairs:
            return [], []
        mix = ws.config.data.mix or {bucket: 1.0 for bucket in {p.bucket for p in pairs}}
        drawn, _ = mix_sample(pairs, mix, settings.pairs, ws.config.data.tier_weight,
                              ctx.inputs.draw_seed + settings.seed)
        return drawn, sorted({origin[p.id] for p in drawn})

    def _redteam_pairs(self, ctx: PhaseContext, loaded: LoadedModel,
                       quarantined: list[Rejected]) -> list[PreferencePair]:
        """The candidate answers training-half red-team prompts. An answer that would be a chosen side (a safe
        look-alike's) passes the quality rules first; the policy is only pushed away from a compliant answer, so
        that one may be as poor as it is."""
        ws = ctx.workspace
        settings = ws.config.align.dpo
        items: list[RedTeamItem] = sorted(safety_train(load_version_items(ws, ctx.inputs.redteam)), key=lambda i: i.id)
        random.Random(ctx.inputs.draw_seed + settings.seed).shuffle(items)  # another sample every cycle
        items = items[: settings.redteam_pairs]
        if not items:
            return []
        prompts = [user_prompt_ids(loaded.tokenizer, item.prompt) for item in items]
        # Sampled, as the policy answers: DPO learns most from pairs on its own distribution.
        outputs = generate(loaded.model, loaded.tokenizer, prompts, ws.config.eval.answer_tokens * 2,
                           ws.config.eval.batch_size, temperature=ws.config.dream.temperature, seed=settings.seed,
                           description="dream: answering red-team prompts")
        answers: dict[str, str] = {}
        for item, (answer,) in zip(items, outputs):
            if not item.must_refuse and not is_refusal(answer) and (reason := check_text(answer)) is not None:
                quarantined.append(Rejected(origin=f"redteam {item.id}", step="dream quality gate", reason=reason,
                                            row={"prompt": item.prompt, "answer": answer}))
            else:
                answers[item.id] = answer
        pairs, skipped = redteam_pairs([i for i in items if i.id in answers], answers, is_refusal)
        quarantined += skipped
        return pairs

    def train(self, ctx: PhaseContext, loaded: LoadedModel, candidate: ModelRecord, data: DreamData) -> Trained:
        settings = ctx.workspace.config.align.dpo
        folder = ctx.workspace.state / "dream-runs" / ctx.cycle.id / self.name
        prepare_policy(ctx, loaded, candidate, settings.full, settings.seed, folder / "policy")
        run = train_dpo(loaded.model, loaded.tokenizer, data.pairs, settings, folder / "trainer", "dream: DPO")
        return Trained(run.metrics, run.steps)
