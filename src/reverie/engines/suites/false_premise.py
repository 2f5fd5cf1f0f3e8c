"""False premise: held-out questions asked as though their answer were a changed year, number or name (the
document says 1874, the question presumes 1875), closed-book; the model should reject the premise and give the
document's value. Each is paired with a control asking the same question with the true value, which the model
should answer without denying it, so that a model that denies everything does not score."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.counterfactual import false_premises
from reverie.data.knowledge import Knowledge
from reverie.data.premise_grader import corrects_premise, keeps_premise, rejects_premise
from reverie.data.splits import knowledge_held_out
from reverie.engines.generation import generate
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.suites.base import ItemResult, fingerprint
from reverie.errors import ReverieError


class FalsePremiseSuite:
    name = "false_premise"

    def __init__(self, knowledge: Knowledge, answer_tokens: int, batch_size: int):
        self.premises, _ = false_premises(knowledge_held_out(knowledge), knowledge.documents)
        if not self.premises:
            raise ReverieError(f"false_premise: no held-out question of knowledge {knowledge.name!r} has an answer "
                               "that can be changed (a year, number or name found in its document)")
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint([(p.prompt(), p.control(), p.true_value, p.false_value) for p in self.premises],
                           self.answer_tokens)

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        prompts = [text for p in self.premises for text in (p.prompt(), p.control())]
        outputs = [o[0] for o in generate(model, tokenizer, [user_prompt_ids(tokenizer, text) for text in prompts],
                                          self.answer_tokens, self.batch_size, description="false premise")]
        results = []
        for index, premise in enumerate(self.premises):
            answer, control = outputs[2 * index], outputs[2 * index + 1]
            detail = {"kind": premise.kind, "true": premise.true_value, "false": premise.false_value}
            results.append(ItemResult(f"{index}/false", premise.prompt(), answer, {
                "detection": float(rejects_premise(answer, premise.true_value, premise.false_value)),
                "correction": float(corrects_premise(answer, premise.true_value, premise.false_value))}, detail))
            results.append(ItemResult(f"{index}/control", premise.control(), control,
                                      {"control": float(keeps_premise(control))}, detail))
        return results
