"""Dream by SEAL self-edits: the self-edit generator (trained by `reverie seal train`, or the current release
until then) writes implications of every document. Items that fail the data layer's quality rules, share no
content word with their document, or (when dream.seal.max_perplexity is set) read as implausible to the
candidate are quarantined with the reason; the candidate trains on the documents plus the kept implications
(SEAL's continued-pretraining variant)."""

from __future__ import annotations

from reverie.data.knowledge import Example
from reverie.data.records import Rejected
from reverie.data.self_edits import gate_items, self_edit_examples
from reverie.engines.inner_loop import generate_self_edits
from reverie.engines.models import LoadedModel
from reverie.engines.scoring import plausible_items
from reverie.generator import current_generator, load_writer
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import DREAM, DreamData, SupervisedDream, register


@register(DREAM, "seal")
class SelfEdits(SupervisedDream):
    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData:
        """Documents plus their grounded self-edit items (one self-edit per document), and the quarantined rest."""
        ws = ctx.workspace
        seal = ws.config.dream.seal
        # Until a generator is trained the release writes: the model before Learn, whose writing has not been
        # narrowed by Learn's short training answers.
        generator = current_generator(ws)
        writer = load_writer(ws, generator)
        documents = ctx.inputs.knowledge.documents
        edits = generate_self_edits(writer.model, writer.tokenizer, [(d.title, d.text) for d in documents],
                                    seal.style, 1, seal.temperature, seal.max_new_tokens, ws.config.eval.batch_size,
                                    seed=ws.config.dream.train.seed)
        examples: list[Example] = []
        quarantined: list[Rejected] = []
        kept_items = 0
        for document, per_document in zip(documents, edits):
            kept, dropped = gate_items(per_document[0], document.title, document.text)
            if kept and seal.max_perplexity is not None:  # the model-based check, on what passed the rules
                kept, implausible = plausible_items(kept, loaded, seal.max_perplexity, ws.config.eval.batch_size)
                dropped += implausible
            quarantined += [Rejected(origin=f"document {document.id}", step="dream quality gate", reason=reason,
                                     row=item) for item, reason in dropped]
            kept_items += len(kept)
            if kept:
                examples += self_edit_examples(document.title, document.text, kept)
        metrics = {"dream_documents": float(len(documents)), "dream_self_edit_items": float(kept_items),
                   "dream_items_quarantined": float(len(quarantined)),
                   "dream_generator_trained": float(generator.status == "generator")}
        return DreamData(f"seal self-edits by {generator.id}", examples, metrics, quarantined)
