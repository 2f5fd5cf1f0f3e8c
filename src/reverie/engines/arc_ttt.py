"""SEAL's few-shot ARC inner loop: test-time training of a fresh LoRA as one self-edit configures it, then an
exact-match prediction of the task's test outputs.

The training data are leave-one-out tasks built from the demonstrations (each demonstration in turn is the query,
the others its examples), once as given and once per augmentation the self-edit switched on. A step budget caps
the optimizer steps whatever epochs the self-edit asks for, and a token budget leaves out sequences too long for
the machine, so a trial's cost is bounded. The resident model and its adapter are the knowledge experiment's
(engines/inner_loop.py): reset in place per trial, never re-wrapped or reloaded.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.config import ArcSealSettings, TrainSettings
from reverie.data.arc import ArcTask, Grid, grid_text, parse_grid, task_prompt
from reverie.data.arc_augment import apply_to_pair, augmentations_for, grid_fits
from reverie.data.arc_self_edit import (
    SLOT_CHOICES, ArcSelfEdit, InvalidSelfEdit, arc_self_edit_prompt, parse_arc_self_edit, slot_text, template_pieces,
)
from reverie.data.knowledge import Example
from reverie.engines.generation import generate
from reverie.engines.inner_loop import InnerLoop
from reverie.engines.models import reset_lora
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.training import train_sft
from reverie.progress import progress_bar


@dataclass
class ArcTrial:
    """One self-edit's (or in-context learning's) attempt at one task."""

    solved: bool
    valid: bool = True  # False: the self-edit did not parse (`reason` says why) and scores zero
    reason: str | None = None  # why the self-edit was rejected or the task could not be tried
    steps: int = 0
    sequences: int = 0  # training sequences within the token budget
    over_budget: int = 0  # training sequences left out for exceeding max_tokens
    predictions: list[str] = field(default_factory=list)  # the model's answer per test input
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def leave_one_out(pairs: list[tuple[Grid, Grid]]) -> list[tuple[list[tuple[Grid, Grid]], tuple[Grid, Grid]]]:
    """Each demonstration in turn as the query, with the others as its examples."""
    return [(pairs[:i] + pairs[i + 1 :], pairs[i]) for i in range(len(pairs))]


def ttt_examples(demonstrations: list[tuple[Grid, Grid]], edit: ArcSelfEdit) -> list[Example]:
    """The leave-one-out tasks of the demonstrations as given and under each augmentation the self-edit chose
    (an augmentation that would make a grid larger than ARC allows is skipped)."""
    variants = [demonstrations]
    for augmentation in augmentations_for(edit.families()):
        pairs = [apply_to_pair(augmentation, source, target) for source, target in demonstrations]
        if all(grid_fits(grid) for pair in pairs for grid in pair):
            variants.append(pairs)
    return [Example(prompt=task_prompt(examples, query), completion=grid_text(answer),
                    loss_on_prompt=edit.loss_on_all_tokens)
            for pairs in variants for examples, (query, answer) in leave_one_out(pairs)]


def step_schedule(examples: list[Example], epochs: int, max_steps: int, seed: int) -> list[Example]:
    """`epochs` passes over the examples, each in its own seeded order, cut at `max_steps`: one step each."""
    rng = random.Random(seed)
    schedule: list[Example] = []
    for _ in range(epochs):
        order = examples[:]
        rng.shuffle(order)
        schedule += order
    return schedule[:max_steps]


class ArcInnerLoop:
    """The resident model with one LoRA: trials of self-edits on ARC tasks, and the self-edits it writes."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: ArcSealSettings,
                 batch_size: int = 8):
        train = TrainSettings(epochs=1, block_size=settings.max_tokens, rows_per_step=1, pack=False)
        self.resident = InnerLoop(model, tokenizer, settings.lora, train)
        self.settings = settings
        self.batch_size = batch_size

    @property
    def model(self) -> PreTrainedModel:
        return self.resident.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.resident.tokenizer

    def _tokens(self, example: Example) -> int:
        prompt = user_prompt_ids(self.tokenizer, example.prompt or "")
        return len(prompt) + len(self.tokenizer(example.completion, add_special_tokens=False)["input_ids"]) + 1

    def answer_tokens(self, task: ArcTask) -> int:
        """Tokens allowed for a predicted grid: twice the largest demonstration output's (a digit per cell and a
        newline per row), so an answer cannot run on for ever."""
        largest = max(len(grid_text(target)) for _, target in task.demonstrations())
        return 2 * largest + 8

    def _test_prompts(self, task: ArcTask) -> list[list[int]]:
        demonstrations = task.demonstrations()
        return [user_prompt_ids(self.tokenizer, task_prompt(demonstrations, pair.input)) for pair in task.test]

    def over_budget(self, task: ArcTask) -> str | None:
        """Why the task cannot be tried within the token budget (its test prompt and answer do not fit), or None."""
        if max(len(p) for p in self._test_prompts(task)) + self.answer_tokens(task) > self.settings.max_tokens:
            return f"the test prompt and its answer need more than max_tokens={self.settings.max_tokens}"
        return None

    def predict(self, task: ArcTask) -> tuple[list[str], str | None]:
        """Greedy answers to the task's test inputs with every demonstration in the prompt; the reason instead,
        when a test prompt and its answer would not fit the token budget."""
        if (reason := self.over_budget(task)) is not None:
            return [], reason
        texts = generate(self.model, self.tokenizer, self._test_prompts(task), self.answer_tokens(task),
                         self.batch_size, description="ARC: predict")
        return [per_prompt[0] for per_prompt in texts], None

    @staticmethod
    def solved(task: ArcTask, predictions: list[str]) -> bool:
        """Every test output exactly right."""
        return bool(predictions) and all(parse_grid(text) == pair.output for text, pair in zip(predictions, task.test))

    def in_context(self, task: ArcTask) -> ArcTrial:
        """In-context learning only: no adapter training."""
        start = time.perf_counter()
        reset_lora(self.model, 0)
        predictions, reason = self.predict(task)
        return ArcTrial(solved=self.solved(task, predictions), reason=reason, predictions=predictions,
                        seconds=time.perf_counter() - start)

    def trial(self, task: ArcTask, self_edit: str, seed: int = 0) -> ArcTrial:
        """Parse a written self-edit and, when it is a valid configuration, run it (`run`); else score zero."""
        try:
            edit = parse_arc_self_edit(self_edit)
        except InvalidSelfEdit as exc:
            return ArcTrial(solved=False, valid=False, reason=str(exc))
        return self.run(task, edit, seed)

    def run(self, task: ArcTask, edit: ArcSelfEdit, seed: int = 0) -> ArcTrial:
        """Reset the adapter, train it as `edit` says within the step and token budgets, predict the test outputs."""
        if (reason := self.over_budget(task)) is not None:  # nothing to train for
            return ArcTrial(solved=False, reason=reason)
        start = time.perf_counter()
        reset_lora(self.model, seed)
        built = ttt_examples(task.demonstrations(), edit)
        fitting = [e for e in built if self._tokens(e) <= self.settings.max_tokens]
        schedule = step_schedule(fitting, edit.training.num_train_epochs, self.settings.max_steps, seed)
        steps = 0
        if schedule:
            train = self.resident.train.model_copy(update={"learning_rate": edit.training.learning_rate, "seed": seed})
            metrics = train_sft(self.model, self.tokenizer, schedule, train, "ARC: test-time training")
            steps = int(metrics["train_steps"])
        predictions, reason = self.predict(task)
        if not schedule and reason is None:
            reason = f"no training sequence fits max_tokens={self.settings.max_tokens}"
        return ArcTrial(solved=bool(schedule) and self.solved(task, predictions), reason=reason, steps=steps,
                        sequences=len(fitting), over_budget=len(built) - len(fitting), predictions=predictions,
                        seconds=time.perf_counter() - start)

    def write_self_edits(self, tasks: list[ArcTask], samples: int, seed: int = 0) -> list[list[str]]:
        """`samples` self-edits per task written by the model without any trial adapter: result[task][sample].
        Decoding 'free' samples the whole text (it may not parse); 'constrained' samples each value of the
        configuration from its allowed choices, by the model's own probabilities, so every self-edit is valid."""
        reset_lora(self.model, seed)
        prompts = [user_prompt_ids(self.tokenizer, arc_self_edit_prompt(t.demonstrations())) for t in tasks]
        if self.settings.decoding == "free":
            return generate(self.model, self.tokenizer, prompts, self.settings.max_new_tokens, self.batch_size,
                            temperature=self.settings.temperature, samples=samples, seed=seed,
                            description="ARC: self-edits")
        rng = random.Random(seed)
        with progress_bar("ARC: self-edits (constrained)", len(prompts) * samples) as bar:
            written = []
            for prompt in prompts:
                start = self._extend(None, prompt)  # the prompt once, shared by every sample
                written.append([])
                for _ in range(samples):
                    written[-1].append(self._constrained_self_edit(start, rng))
                    bar.advance()
        return written

    @torch.inference_mode()
    def _extend(self, state: tuple[object, torch.Tensor] | None, ids: list[int]) -> tuple[object, torch.Tensor]:
        """(KV cache, last logits) after feeding `ids` on top of `state` (a copy: `state` is left as it was)."""
        cache = copy.deepcopy(state[0]) if state is not None else None
        out = self.model(input_ids=torch.tensor([ids], device=self.model.device), past_key_values=cache,
                         use_cache=True)
        return out.past_key_values, out.logits[0]

    @torch.inference_mode()
    def _constrained_self_edit(self, start: tuple[object, torch.Tensor], rng: random.Random) -> str:
        """The canonical configuration text, each slot's value drawn from softmax(log P(value | text so far) / T);
        the prompt's KV cache is reused, so a self-edit costs a few dozen tokens of compute."""
        state, text = start, ""
        for literal, slot in template_pieces():
            text += literal
            if slot is None:
                break
            state = self._extend(state, self.tokenizer(literal, add_special_tokens=False)["input_ids"])
            options, scores = [], []
            for value in SLOT_CHOICES[slot]:
                ids = self.tokenizer(slot_text(value), add_special_tokens=False)["input_ids"]
                after = self._extend(state, ids)
                logits = torch.cat([state[1][-1:], after[1][:-1]])  # the logits that predict each of `ids`
                scores.append(float(torch.log_softmax(logits.float(), -1)[range(len(ids)), ids].sum()))
                options.append((slot_text(value), after))
            weights = torch.softmax(torch.tensor(scores) / self.settings.temperature, 0).tolist()
            chosen, state = rng.choices(options, weights)[0]
            text += chosen
        return text

    def absorb_adapter(self) -> None:
        self.resident.absorb_adapter()

    def save_weights(self, directory: Path) -> None:
        self.resident.save_weights(directory)
