"""Dream by self-consistency: the candidate answers each training question several times with its document in
view; the majority answer is kept when enough votes agree and the document supports it, and the candidate
learns to give it closed-book. The majority answer over each minority one is kept as a preference dataset,
which the next cycles' dpo may draw from."""

from __future__ import annotations

from reverie.data.knowledge import Example
from reverie.data.preference import PreferencePair
from reverie.data.preference_sources import vote_pairs
from reverie.data.splits import knowledge_train
from reverie.data.synthetic import majority_vote, supported_by
from reverie.data.text import contains_phrase
from reverie.engines.generation import generate
from reverie.engines.models import LoadedModel
from reverie.engines.prompts import open_book_question, user_prompt_ids
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import DREAM, DreamData, SupervisedDream, register


@register(DREAM, "self-consistency")
class SelfConsistency(SupervisedDream):
    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData:
        ws = ctx.workspace
        settings = ws.config.dream
        items = knowledge_train(ctx.inputs.knowledge)
        prompts = [user_prompt_ids(loaded.tokenizer, open_book_question(d.text, qa.question)) for d, qa in items]
        votes = generate(
            loaded.model, loaded.tokenizer, prompts, ws.config.eval.max_new_tokens, ws.config.eval.batch_size,
            temperature=settings.temperature, samples=settings.samples, seed=settings.train.seed,
            description="dream: voting",
        )
        kept: list[Example] = []
        pairs: list[PreferencePair] = []
        agreeing_with_gold = 0
        for (document, qa), answers in zip(items, votes):
            vote = majority_vote(answers)
            if vote and vote.share >= settings.min_agreement and supported_by(vote.answer, document.text):
                kept.append(Example(prompt=qa.question, completion=vote.answer))
                agreeing_with_gold += contains_phrase(vote.answer, qa.answer)
                pairs += vote_pairs(qa.question, [a for a in answers if a.strip()], vote.answer)
        return DreamData("self-consistency", kept, {"dream_questions": float(len(items)),
                                                    "dream_kept": float(len(kept)),
                                                    "dream_kept_containing_gold": float(agreeing_with_gold),
                                                    "dream_vote_pairs": float(len(pairs))},
                         found_pairs=pairs)
