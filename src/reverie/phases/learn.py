"""Learn: LoRA SFT on the knowledge drop (documents plus training questions), on packed sequences."""

from __future__ import annotations

from reverie.data.datasets import save_dataset
from reverie.data.knowledge import learn_examples, load_knowledge
from reverie.engines.models import attach_lora, load_version, store_adapter
from reverie.engines.training import train_sft
from reverie.phases.base import PhaseContext, PhaseResult


class Learn:
    name = "learn"

    def run(self, ctx: PhaseContext) -> PhaseResult:
        config = ctx.workspace.config
        parent = ctx.candidate()
        knowledge = load_knowledge(config.data.knowledge, ctx.workspace.root)
        examples = learn_examples(knowledge)
        dataset = save_dataset(ctx.workspace, f"{knowledge.name}/learn", config.data.knowledge, examples)

        # A parent that already carries an adapter keeps training it; otherwise a fresh one is attached.
        loaded = load_version(ctx.workspace, parent, trainable_adapter=True)
        if not parent.adapter:
            loaded.model = attach_lora(loaded.model, config.learn.lora, config.learn.train.seed)
        metrics = train_sft(loaded.model, loaded.tokenizer, examples, config.learn.train, "learn: LoRA SFT")

        adapter = store_adapter(ctx.workspace, loaded.model)
        model = ctx.new_model(parent, self.name, adapter=adapter, datasets=sorted({*parent.datasets, dataset.hash}))
        return PhaseResult(
            outputs={"model": model.id, "dataset": dataset.hash, "artifacts": [adapter, dataset.hash]},
            metrics=metrics,
            new_models=[model],
            new_datasets=[dataset],
        )
