"""Learn: LoRA SFT on the knowledge drop (documents plus training questions) and, when learn.pool_records is
set, records drawn from the data pool by the configured bucket mix, plus replay of earlier Gate failures
(capped at learn.replay_share); on packed sequences."""

from __future__ import annotations

from reverie.data.datasets import save_dataset
from reverie.data.feedback import save_feedback_replay
from reverie.data.knowledge import learn_examples
from reverie.data.pool import draw_for_learn
from reverie.data.replay import draw_replay
from reverie.engines.models import load_version, store_adapter
from reverie.engines.training import train_sft
from reverie.phases.base import PhaseContext, PhaseResult
from reverie.phases.outputs import LearnOutput
from reverie.phases.strategies.base import attach_training_adapter, stack_beneath


class Learn:
    name = "learn"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        config = ctx.workspace.config
        parent = ctx.candidate()
        knowledge, seed = ctx.inputs.knowledge, ctx.inputs.draw_seed
        draw = draw_for_learn(ctx.workspace, seed, ctx.inputs.pool)
        examples = learn_examples(knowledge) + draw.examples
        feedback, corrections = save_feedback_replay(ctx.workspace, ctx.cycle.id, ctx.inputs.feedback)
        fresh = (feedback, corrections) if feedback else None
        replay, replayed_from = draw_replay(ctx.workspace, len(examples), seed, fresh)
        examples += replay
        source = config.data.knowledge + (" + data pool" if draw.examples else "") + (" + replay" if replay else "")
        dataset = save_dataset(ctx.workspace, f"{knowledge.name}/learn", source, examples, kind="learn",
                               cycle_id=ctx.cycle.id)

        # A parent that already carries an adapter keeps training it (or, learn.stack_adapters, stacks a new one)
        loaded = load_version(ctx.workspace, parent, trainable_adapter=True)
        attach_training_adapter(ctx, loaded, parent, config.learn.train.seed)
        metrics = train_sft(loaded.model, loaded.tokenizer, examples, config.learn.train, "learn: LoRA SFT")
        metrics |= {f"pool_drawn_{b.bucket}": float(b.drawn) for b in draw.buckets}
        metrics |= {f"pool_repeated_{b.bucket}": float(b.repeated) for b in draw.buckets if b.repeated}
        if draw.contaminated:
            metrics["pool_contaminated"] = float(draw.contaminated)
        metrics |= {"replay_examples": float(len(replay)), "replay_share": len(replay) / len(examples)}

        adapter = store_adapter(ctx.workspace, loaded.model)
        # new feedback joins the lineage even when the replay cap left its examples out of this draw
        datasets = sorted({*parent.datasets, dataset.hash, *draw.datasets, *replayed_from,
                           *([feedback.hash] if feedback else [])})
        model = ctx.new_model(parent, self.name, adapter=adapter, stack=stack_beneath(ctx, parent),
                              datasets=datasets)
        return PhaseResult(
            LearnOutput(model=model.id, dataset=dataset.hash, adapter=adapter,
                        feedback=feedback.hash if feedback else None),
            metrics=metrics | {"feedback_corrections": float(len(corrections))},
            new_models=[model],
            new_datasets=[dataset] + ([feedback] if feedback else []),
        )
