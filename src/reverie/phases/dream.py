"""Dream: self-consistency synthetic data.

The candidate answers each training question several times with its document in view; the majority answer
is kept when enough votes agree and the document supports it, and the candidate is then fine-tuned to give
that answer closed-book. The model's own answers pass the data layer's checks before they are trained on.
"""

from __future__ import annotations

from reverie.data.datasets import save_dataset
from reverie.data.knowledge import Example, load_knowledge
from reverie.data.synthetic import majority_vote, supported_by
from reverie.data.text import contains_phrase
from reverie.engines.generation import generate
from reverie.engines.merging import merge_with_ab_check
from reverie.engines.models import attach_lora, load_version, store_adapter, store_weights
from reverie.engines.prompts import open_book_question, user_prompt_ids
from reverie.engines.training import train_sft
from reverie.phases.base import PhaseContext, PhaseResult


class Dream:
    name = "dream"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        config = ctx.workspace.config
        settings = config.dream
        candidate = ctx.candidate()
        if not settings.enabled:
            return PhaseResult(outputs={"model": candidate.id, "reason": "dream.enabled is off"})

        knowledge = load_knowledge(config.data.knowledge, ctx.workspace.root)
        items = knowledge.train_items()
        loaded = load_version(ctx.workspace, candidate, trainable_adapter=True)
        prompts = [user_prompt_ids(loaded.tokenizer, open_book_question(d.text, qa.question)) for d, qa in items]
        votes = generate(
            loaded.model, loaded.tokenizer, prompts, config.eval.max_new_tokens, config.eval.batch_size,
            temperature=settings.temperature, samples=settings.samples, seed=settings.train.seed,
            description="dream: voting",
        )
        kept: list[Example] = []
        agreeing_with_gold = 0
        for (document, qa), answers in zip(items, votes):
            vote = majority_vote(answers)
            if vote and vote.share >= settings.min_agreement and supported_by(vote.answer, document.text):
                kept.append(Example(prompt=qa.question, completion=vote.answer))
                agreeing_with_gold += contains_phrase(vote.answer, qa.answer)
        metrics = {
            "dream_questions": float(len(items)),
            "dream_kept": float(len(kept)),
            "dream_kept_containing_gold": float(agreeing_with_gold),
        }
        if not kept:
            return PhaseResult(outputs={"model": candidate.id, "reason": "no answer passed the vote"}, metrics=metrics)

        dataset = save_dataset(ctx.workspace, f"{knowledge.name}/dream-votes", "self-consistency", kept)
        if not candidate.adapter:
            loaded.model = attach_lora(loaded.model, config.learn.lora, settings.train.seed)
        metrics |= train_sft(loaded.model, loaded.tokenizer, kept, settings.train, "dream: SFT on votes")

        datasets = sorted({*candidate.datasets, dataset.hash})
        check = None
        if not candidate.adapter:  # started from merged weights: merge again if the A/B check allows it
            probe = [(qa.question, qa.answer) for _, qa in knowledge.eval_items()]
            check = merge_with_ab_check(
                loaded.model, loaded.tokenizer, probe, config.compress.max_logit_diff,
                config.eval.max_new_tokens, config.eval.batch_size,
            )
            metrics["merge_max_logit_diff"] = check.max_logit_diff
        if check is not None and check.merged is not None:
            artifact = store_weights(ctx.workspace, check.merged, loaded.tokenizer)
            model = ctx.new_model(candidate, self.name, weights=artifact, adapter=None, source=None,
                                  datasets=datasets)
        else:  # the adapter stays an adapter (the candidate kept one, or this merge was refused)
            artifact = store_adapter(ctx.workspace, loaded.model)
            model = ctx.new_model(candidate, self.name, adapter=artifact, datasets=datasets)
        return PhaseResult(
            outputs={"model": model.id, "dataset": dataset.hash, "artifacts": [artifact, dataset.hash]},
            metrics=metrics,
            new_models=[model],
            new_datasets=[dataset],
        )
