"""Dream by counterfactuals: minimal, deterministic changes to the cycle's documents (a year shifted, a number
changed, a name swapped for another document's) and false-premise questions made from the training questions
("... Explain why it is 1875." where the document says 1874). The candidate learns to correct them ("No — it
is 1874, not 1875. The document says: ...") beside true-premise controls and unchanged documents that it learns
to confirm, so that it does not learn to deny everything; the training questions, asked plainly, are answered as
Learn taught them, so that the new habit does not overwrite closed-book answers (without them SmolLM2's training
accuracy fell from 1.000 to 0.812, benchmarks/dreams_cf_cot.py). A change not found in its document, or one that leaves
the text as it was, is quarantined with the reason. No model writes anything here; the Gate's false_premise
suite measures the skill on the held-out questions."""

from __future__ import annotations

from collections import Counter

from reverie.data.counterfactual import counterfactual_examples, false_premises, passage_edits
from reverie.data.knowledge import Example
from reverie.data.splits import knowledge_train
from reverie.engines.models import LoadedModel
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import DREAM, DreamData, SupervisedDream, register


@register(DREAM, "counterfactual")
class Counterfactual(SupervisedDream):
    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData:
        settings = ctx.workspace.config.dream.counterfactual
        knowledge = ctx.inputs.knowledge
        train = knowledge_train(knowledge)
        premises, unchanged = false_premises(train, knowledge.documents, settings.kinds)
        edits, unedited = passage_edits(knowledge.documents, settings.kinds, settings.per_document)
        anchors = [Example(prompt=qa.question, completion=qa.answer) for _, qa in train]
        examples = counterfactual_examples(premises, edits) + anchors
        kinds = Counter(p.kind for p in premises) + Counter(e.change.kind for e in edits)
        metrics = {"dream_false_premises": float(len(premises)), "dream_passage_edits": float(len(edits)),
                   "dream_anchors": float(len(anchors)), "dream_examples": float(len(examples)),
                   "dream_quarantined": float(len(unchanged + unedited))}
        metrics |= {f"dream_{kind}_changes": float(kinds[kind]) for kind in settings.kinds}
        return DreamData("counterfactual changes to the documents and training questions", examples, metrics,
                         unchanged + unedited)
