"""The SEAL inner loop, fast by design: one resident model with one LoRA, reset in place for every trial;
and self-edit generation, the model writing its own training data for a passage.

A trial trains the adapter on one self-edit (packed rows, fresh optimizer) and then answers the passage's
questions closed-book by batched greedy decoding. Nothing is re-wrapped, saved or reloaded between trials.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.config import LoraSettings, TrainSettings
from reverie.data.knowledge import Example
from reverie.data.passages import Passage
from reverie.data.self_edits import parse_self_edit, self_edit_examples, self_edit_prompt
from reverie.engines.evaluation import Grader, QAResult, closed_book_qa
from reverie.engines.generation import generate
from reverie.engines.models import attach_lora, reset_lora
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.training import train_sft


@dataclass
class TrialResult:
    accuracy: float
    f1: float
    train_seconds: float
    eval_seconds: float
    train_tokens_per_s: float
    truncated: int  # sequences cut to the block size
    answers: list[QAResult]


class InnerLoop:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lora: LoraSettings,
        train: TrainSettings,
        max_new_tokens: int = 32,
        batch_size: int = 16,
        grader: Grader | None = None,
    ):
        if isinstance(model, PeftModel):
            raise TypeError("InnerLoop needs a plain model: merge and unload an adapter model first")
        self.model = attach_lora(model, lora, train.seed)
        self.lora = lora
        self.tokenizer = tokenizer
        self.train = train
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.grader = grader  # None: normalised containment

    def trial(self, examples: list[Example], questions: list[tuple[str, str]], seed: int = 0) -> TrialResult:
        """Reset the adapter, train it on `examples`, and grade closed-book answers to `questions`.

        `seed` (not train.seed) seeds the adapter's initialisation and the row order of this trial.
        """
        reset_lora(self.model, seed)
        start = time.perf_counter()
        metrics = train_sft(self.model, self.tokenizer, examples, self.train.model_copy(update={"seed": seed}),
                            "inner loop: train")
        trained = time.perf_counter()
        scores, answers = closed_book_qa(self.model, self.tokenizer, questions, self.max_new_tokens, self.batch_size,
                                         self.grader)
        return TrialResult(
            accuracy=scores["accuracy"],
            f1=scores["f1"],
            train_seconds=trained - start,
            eval_seconds=time.perf_counter() - trained,
            train_tokens_per_s=metrics["train_tokens_per_s"],
            truncated=int(metrics["train_truncated"]),
            answers=answers,
        )

    def absorb_adapter(self) -> None:
        """Fold the current adapter into the weights and attach a fresh one (once per outer-loop round)."""
        self.model = attach_lora(self.model.merge_and_unload(), self.lora, self.train.seed)

    def save_weights(self, directory: Path) -> None:
        """Save the weights without the trial adapter (the generator an outer-loop round produced)."""
        base = self.model.unload()
        base.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        self.model = attach_lora(base, self.lora, self.train.seed)


def multi_passage_trial(loop: InnerLoop, passages: list[Passage], edits: list[list[str]], seed: int = 0) -> TrialResult:
    """SEAL's continued-pretraining variant: one adapter trained on every passage and its self-edit at once,
    graded on all their questions."""
    if len(edits) != len(passages):
        raise ValueError(f"one self-edit per passage: got {len(edits)} for {len(passages)} passages")
    examples = [e for p, items in zip(passages, edits) for e in self_edit_examples(p.title, p.context, items)]
    return loop.trial(examples, [qa for p in passages for qa in p.qa_pairs()], seed)


def generate_self_edits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    passages: list[tuple[str, str]],
    style: str,
    samples: int,
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int = 0,
) -> list[list[list[str]]]:
    """`samples` self-edits per (title, passage), each parsed into items: result[passage][sample] = items."""
    prompts = [user_prompt_ids(tokenizer, self_edit_prompt(style, title, text)) for title, text in passages]
    texts = generate(model, tokenizer, prompts, max_new_tokens, batch_size, temperature=temperature,
                     samples=samples, seed=seed, description=f"self-edits ({style})")
    return [[parse_self_edit(text) for text in per_passage] for per_passage in texts]
