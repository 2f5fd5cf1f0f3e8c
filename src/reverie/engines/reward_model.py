"""The reward model: a sequence-classification head on a causal LM, trained on preference pairs with TRL's
`RewardTrainer` (the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected)), LoRA by default, and the scorer
that Gate and Dream read its scores through.

Training and scoring tokenize a conversation the same way (`conversation_ids`: the chat template over the
prompt and the answer, as TRL renders a conversational pair), so a score means the same in both. A run keeps
TRL checkpoints (weights, optimizer, scheduler, RNG) in its own folder and resumes from the newest complete one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from transformers.trainer_callback import PrinterCallback
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import suppress_seqcls_warning

from reverie.config import ModelConfig, RewardModelSettings
from reverie.data.preference import PreferencePair
from reverie.engines.models import load_version, weights_dir
from reverie.errors import ReverieError
from reverie.progress import Bar, progress_bar, status_line
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

SCORE_HEAD = "score"  # the head AutoModelForSequenceClassification puts on a decoder (Llama, Qwen, SmolLM, ...)
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence marks one as complete
SCORING_CONFIG = "reverie_config.json"  # the resolved config stored beside the weights (models.store_weights)
DEFAULT_SCORING_LENGTH = 4096


def conversation_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], answer: str,
                     max_length: int) -> tuple[list[int], bool]:
    """The tokens the reward model reads for `answer` to `messages`, and whether they were cut. A longer
    conversation keeps its last `max_length` tokens: the score is read at the end, where the answer is."""
    if not tokenizer.chat_template:
        raise ReverieError("the reward model's tokenizer has no chat template; reverie scores answers as chat turns")
    conversation = [*messages, {"role": "assistant", "content": answer}]
    ids = list(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"])
    return ids[-max_length:], len(ids) > max_length


def pair_rows(tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], max_length: int,
              ) -> tuple[list[dict[str, Any]], int]:
    """TRL's tokenized preference rows and how many pairs had a side cut to `max_length`. A pair's margin goes
    into the loss (-log sigmoid(r_c - r_r - margin)); when some pairs carry one, the others get 0, no margin."""
    with_margin = any(p.margin is not None for p in pairs)
    rows, truncated = [], 0
    for pair in pairs:
        chosen, cut_chosen = conversation_ids(tokenizer, pair.messages(), pair.chosen, max_length)
        rejected, cut_rejected = conversation_ids(tokenizer, pair.messages(), pair.rejected, max_length)
        truncated += cut_chosen or cut_rejected
        row: dict[str, Any] = {"chosen_ids": chosen, "rejected_ids": rejected}
        if with_margin:
            row["margin"] = float(pair.margin or 0.0)
        rows.append(row)
    return rows, truncated


def load_classifier(directory: Path, config: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-output sequence classifier from a safetensors directory: a causal LM gets a new score head (seed
    first), a saved reward model its own."""
    try:
        with suppress_seqcls_warning():  # the new head and the unused lm_head are expected, not a problem
            model = AutoModelForSequenceClassification.from_pretrained(
                directory, num_labels=1, dtype=getattr(torch, config.dtype), use_safetensors=True,
                trust_remote_code=config.trust_remote_code,
            )
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=config.trust_remote_code)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        hint = "" if config.trust_remote_code else " (if it ships its own code, see model.trust_remote_code)"
        raise ReverieError(f"reward model: {directory} could not be loaded{hint}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id  # where the head finds a row's last token
    model.eval()
    return model, tokenizer


def base_directory(ws: Workspace, record: ModelRecord, scratch: Path) -> Path:
    """The safetensors directory of a model version's full weights; an adapter is merged in first and the
    result saved under `scratch`, since a classifier loads from a directory."""
    if not record.adapter:
        return weights_dir(ws, record)
    loaded = load_version(ws, record)
    merged = loaded.model.merge_and_unload()
    merged.save_pretrained(scratch, safe_serialization=True)
    loaded.tokenizer.save_pretrained(scratch)
    return scratch


@dataclass
class StepLog:
    step: int
    loss: float
    accuracy: float  # share of the step's pairs where chosen outscored rejected


@dataclass
class RewardTraining:
    """A finished run: the plain classifier (any adapter merged in) and what the steps logged."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    steps: int
    resumed_from: int  # the step the run picked up from; 0 for a fresh start
    truncated: int
    seconds: float
    log: list[StepLog] = field(default_factory=list)


def _checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint folder, or None for a folder a kill left half written."""
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None
    step = state.get("global_step")
    return step if path.name == f"{CHECKPOINT_PREFIX}{step}" else None


def newest_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint of a run and its step. A folder a kill left half written is removed, so
    the run writes it again."""
    folders = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
               if p.is_dir() and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    newest = None
    for path in sorted(folders, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX))):
        step = _checkpoint_step(path)
        if step is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            newest = (path, step)
    return newest


class _QuietRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer without its usage ping (reverie never goes online) and without the draft model card
    it writes into every checkpoint (reverie writes its own card)."""

    def _send_telemetry(self) -> None:
        return None

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        return None


class _StepProgress(TrainerCallback):
    """Advances reverie's progress bar once per optimizer step, with the step's loss and accuracy."""

    def __init__(self, bar: Bar):
        self.bar = bar

    def on_train_begin(self, args, state, control, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if state.global_step:
            self.bar.advance(state.global_step, status=f"resumed at step {state.global_step}")

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if logs and "loss" in logs:
            self.bar.advance(status=f"loss {logs['loss']:.3f} acc {logs.get('accuracy', float('nan')):.2f}")


def _reward_config(settings: RewardModelSettings, output_dir: Path) -> RewardConfig:
    cuda = torch.cuda.is_available()
    return RewardConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="linear",
        seed=settings.seed,
        max_length=None,  # cut to max_length in pair_rows: TRL would drop longer pairs without a word
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,  # the newest, and the one before while the newest is being written
        save_only_model=False,  # optimizer, scheduler and RNG too: a resume continues the same run
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        activation_checkpointing=False,
        dataloader_num_workers=0,
    )


def train_reward(base_dir: Path, model_config: ModelConfig, pairs: list[PreferencePair],
                 settings: RewardModelSettings, output_dir: Path) -> RewardTraining:
    """Train a reward model on `pairs` from the causal LM in `base_dir`, checkpointing into `output_dir` and
    resuming from its newest complete checkpoint; return it with any adapter merged in."""
    from datasets import Dataset  # TRL's own dependency; imported here like the trainer that needs it

    torch.manual_seed(settings.seed)  # the new score head (and adapter) start from the run's seed
    model, tokenizer = load_classifier(base_dir, model_config)
    rows, truncated = pair_rows(tokenizer, pairs, settings.max_length)
    peft_config = None if settings.full else LoraConfig(
        task_type="SEQ_CLS", r=settings.lora.rank, lora_alpha=settings.lora.alpha, lora_dropout=settings.lora.dropout,
        target_modules=list(settings.lora.target_modules), modules_to_save=[SCORE_HEAD],
    )
    resume = newest_checkpoint(output_dir)
    total = math.ceil(len(rows) / settings.batch_size) * settings.epochs
    if resume is not None:
        status_line(f"resuming the reward model from step {resume[1]} of {total} ({resume[0]})")
    start = time.perf_counter()
    with progress_bar("reward model", total) as bar:
        trainer = _QuietRewardTrainer(model=model, args=_reward_config(settings, output_dir),
                                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                      peft_config=peft_config, callbacks=[_StepProgress(bar)])
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
        trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    trained = trainer.model
    if not settings.full:
        trained = trained.merge_and_unload()
    trained.eval()
    log = [StepLog(int(e["step"]), float(e["loss"]), float(e.get("accuracy", math.nan)))
           for e in trainer.state.log_history if "loss" in e]  # restored from the checkpoint: the whole run
    return RewardTraining(trained, tokenizer, trainer.state.global_step, resume[1] if resume else 0, truncated,
                          time.perf_counter() - start, log)


class RewardScorer:
    """Scores answers with a reward model (higher is preferred), reading each conversation the way training
    did. The Gate's preference judge and Dream's GRPO reward call it."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                 max_length: int = DEFAULT_SCORING_LENGTH):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def score(self, messages_list: list[list[dict]], answers: list[str]) -> list[float]:
        """The reward of each answer to the conversation before it (the same index in both lists)."""
        if len(messages_list) != len(answers):
            raise ValueError(f"{len(messages_list)} conversations but {len(answers)} answers")
        ids = [conversation_ids(self.tokenizer, m, a, self.max_length)[0] for m, a in zip(messages_list, answers)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        scores = [0.0] * len(ids)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in batch], device=device)
            mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in batch], device=device)
            logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, 0]
            for i, value in zip(batch, logits.float().tolist()):
                scores[i] = value
        return scores


def load_reward_scorer(ws: Workspace, record: ModelRecord) -> RewardScorer:
    """The scorer of a registered reward model, loaded from its artifact (safetensors only)."""
    if record.status != "reward" or not record.weights:
        raise ReverieError(f"model {record.id} is not a reward model (status {record.status}); "
                           "train one with `reverie rm train`")
    directory = ws.artifacts.path(record.weights)
    model, tokenizer = load_classifier(directory, ws.config.model)
    max_length = DEFAULT_SCORING_LENGTH
    if (directory / SCORING_CONFIG).is_file():  # score at the length it was trained at
        saved = json.loads((directory / SCORING_CONFIG).read_text())
        max_length = saved.get("align", {}).get("reward", {}).get("max_length", DEFAULT_SCORING_LENGTH)
    return RewardScorer(model, tokenizer, ws.config.eval.batch_size, max_length)
