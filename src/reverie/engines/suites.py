"""The evaluation suites a model version is judged by, with scores cached in the registry per suite."""

from __future__ import annotations

import hashlib
import json

from reverie.data.knowledge import Knowledge, load_knowledge
from reverie.data.multiple_choice import ChoiceItem, load_choice_items
from reverie.engines.evaluation import choice_accuracy, closed_book_qa
from reverie.engines.models import load_version
from reverie.registry import ModelRecord
from reverie.workspace import Workspace


CORRECT_PREFIX = "correct/"  # per-question results, kept so that the Gate's failures can be replayed


def _fingerprint(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Suites:
    """Closed-book QA on the knowledge drop's held-out questions, and the general multiple-choice check."""

    def __init__(self, workspace: Workspace):
        config = workspace.config
        self.workspace = workspace
        self.knowledge: Knowledge = load_knowledge(config.data.knowledge, workspace.root)
        self.general: list[ChoiceItem] = load_choice_items(
            config.eval.general_suite, workspace.root, config.eval.general_limit
        )
        self.qa_items = [(qa.question, qa.answer) for _, qa in self.knowledge.eval_items()]
        generation = (config.eval.max_new_tokens, config.model.dtype)
        self.knowledge_key = f"knowledge@{_fingerprint([self.qa_items, generation])}"
        self.general_key = f"general@{_fingerprint([[item.__dict__ for item in self.general], config.model.dtype])}"

    def scores(self, record: ModelRecord) -> dict[str, float]:
        """knowledge_accuracy, knowledge_f1 and general_accuracy, computed once per model and suite."""
        registry = self.workspace.registry
        knowledge = registry.get_metrics(record.id, self.knowledge_key)
        general = registry.get_metrics(record.id, self.general_key)
        if not knowledge or not general:
            config = self.workspace.config.eval
            loaded = load_version(self.workspace, record)
            if not knowledge:
                knowledge, answers = closed_book_qa(
                    loaded.model, loaded.tokenizer, self.qa_items, config.max_new_tokens, config.batch_size
                )
                per_question = {f"{CORRECT_PREFIX}{i}": float(a.correct) for i, a in enumerate(answers)}
                registry.log_metrics(record.id, self.knowledge_key, knowledge | per_question)
            if not general:
                general = choice_accuracy(loaded.model, loaded.tokenizer, self.general)
                registry.log_metrics(record.id, self.general_key, general)
        return {
            "knowledge_accuracy": knowledge["accuracy"],
            "knowledge_f1": knowledge["f1"],
            "general_accuracy": general["accuracy"],
        }

    def failed_questions(self, record: ModelRecord) -> list[int]:
        """Indices into the held-out questions that `record` answered wrongly (after `scores`)."""
        knowledge = self.workspace.registry.get_metrics(record.id, self.knowledge_key)
        return sorted(int(k.removeprefix(CORRECT_PREFIX)) for k, v in knowledge.items()
                      if k.startswith(CORRECT_PREFIX) and v == 0.0)
