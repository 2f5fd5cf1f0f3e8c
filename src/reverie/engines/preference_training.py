"""Preference training on TRL: DPO on chosen/rejected pairs, and GRPO or RLOO against reward functions with a KL
penalty to the reference (TRL has no PPOTrainer: GRPO keeps PPO's clipped objective with a group-mean baseline
instead of a critic, RLOO a leave-one-out baseline, and `beta > 0` adds the KL term).

The model comes in as reverie loads it: a PeftModel when it carries an adapter (TRL then keeps a frozen copy of
the adapter, "ref", as the reference, so the reference is the model as it arrived), or plain weights for full
fine-tuning (TRL keeps a frozen copy; with precomputed reference log-probabilities it needs none in memory).
Every logged step is kept, so a run's reward, KL, margins and lengths can be read back per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peft import PeftModel
from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from reverie.config import DPOSettings, GRPOSettings
from reverie.data.preference import PreferencePair
from reverie.engines.libraries import quiet_libraries
from reverie.engines.rewards import RewardFunction
from reverie.engines.vllm_runtime import vllm_module
from reverie.errors import ReverieError
from reverie.progress import Bar, progress_bar, status_line

# What TRL logs, renamed for reverie's metrics (`<name>_first` / `<name>_last` summarise the run).
DPO_LOGGED = {"loss": "loss", "rewards/margins": "margin", "rewards/chosen": "chosen_reward",
              "rewards/rejected": "rejected_reward", "rewards/accuracies": "reward_accuracy"}
GRPO_LOGGED = {"loss": "loss", "reward": "reward", "kl": "kl", "completions/mean_length": "completion_length",
               "reward_std": "reward_std"}


@dataclass
class PreferenceRun:
    """A finished preference run: summary metrics and every logged step."""

    metrics: dict[str, float]
    steps: list[dict[str, float]] = field(default_factory=list)


class _StepLog(TrainerCallback):
    """Advance reverie's progress bar and keep every logged step."""

    def __init__(self, bar: Bar, logged: dict[str, str]):
        self.bar, self.logged, self.steps = bar, logged, []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or "train_runtime" in logs:
            return
        row = {"step": float(state.global_step)}
        row |= {name: float(logs[key]) for key, name in self.logged.items() if key in logs}
        self.steps.append(row)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "step")
        self.bar.advance(status=shown)


def _common_args(output_dir: Path, seed: int) -> dict[str, Any]:
    """TrainingArguments every run here shares: no trackers, no checkpoints (a Dream reruns from its start when
    resumed), logging at every step, the CPU unless a GPU is there."""
    import torch

    return {"output_dir": str(output_dir), "report_to": "none", "logging_steps": 1, "save_strategy": "no",
            "use_cpu": not torch.cuda.is_available(), "disable_tqdm": True, "dataloader_num_workers": 0,
            "seed": seed, "data_seed": seed}


def _summary(prefix: str, steps: list[dict[str, float]], names: dict[str, str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in names.values():
        values = [row[name] for row in steps if name in row]
        if values:
            metrics[f"{prefix}_{name}_first"], metrics[f"{prefix}_{name}_last"] = values[0], values[-1]
    return metrics


def _run(make_trainer: Callable[[list[TrainerCallback]], Any], model: PreTrainedModel | PeftModel,
         description: str, steps_total: int, logged: dict[str, str]) -> tuple[list[dict[str, float]], float]:
    """Train with the trainer `make_trainer` builds, reverie's bar instead of TRL's printed logs; then drop TRL's
    reference adapter. Returns every logged step and the seconds it took."""
    start = time.perf_counter()
    with progress_bar(description, steps_total) as bar:
        log = _StepLog(bar, logged)
        trainer = make_trainer([log])
        trainer.remove_callback(PrinterCallback)  # our bar shows the figures
        trainer.train()
    _drop_reference_adapter(model)
    model.eval()
    return log.steps, time.perf_counter() - start


def _drop_reference_adapter(model: PreTrainedModel | PeftModel) -> None:
    """TRL's frozen reference copy of the adapter must not be saved with the trained one."""
    if isinstance(model, PeftModel) and "ref" in model.peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")


def train_dpo(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair],
              settings: DPOSettings, output_dir: Path, description: str = "dpo") -> PreferenceRun:
    """Train the model's trainable parameters by DPO on `pairs`; returns per-step loss, implicit rewards and
    margins, and the lengths of the two sides."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ReverieError("DPO needs at least one preference pair")
    quiet_libraries()
    args = DPOConfig(**_common_args(output_dir, settings.seed), per_device_train_batch_size=settings.batch_size,
                     num_train_epochs=settings.epochs, learning_rate=settings.learning_rate, beta=settings.beta,
                     max_length=settings.max_length, precompute_ref_log_probs=settings.precompute_ref_log_probs,
                     lr_scheduler_type="linear", warmup_steps=0,
                     **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, settings.sft_weight]}
                        if settings.sft_weight else {}))
    dataset = Dataset.from_list([p.trl_row() for p in pairs])
    steps, elapsed = _run(lambda callbacks: DPOTrainer(model=model, args=args, train_dataset=dataset,
                                                       processing_class=tokenizer, callbacks=callbacks),
                          model, f"{description} ({len(pairs)} pairs)",
                          -(-len(pairs) // settings.batch_size) * settings.epochs, DPO_LOGGED)
    chosen = [len(p.chosen) for p in pairs]
    rejected = [len(p.rejected) for p in pairs]
    metrics = _summary("dpo", steps, DPO_LOGGED) | {
        "dpo_pairs": float(len(pairs)), "dpo_steps": float(len(steps)), "dpo_seconds": elapsed,
        "dpo_chosen_chars": sum(chosen) / len(chosen), "dpo_rejected_chars": sum(rejected) / len(rejected),
        "dpo_pairs_per_s": len(pairs) * settings.epochs / elapsed if elapsed else 0.0,
    }
    return PreferenceRun(metrics, steps)


class RLPrompt(BaseModel):
    """A prompt to sample answers for, with what verifiable rewards check against."""

    prompt: str
    answer: str | None = None  # answer_contained: the completion should contain it
    must_refuse: bool | None = None  # refusal: the completion should refuse (True) or answer (False)

    def trl_row(self) -> dict[str, Any]:
        return {"prompt": [{"role": "user", "content": self.prompt}], "answer": self.answer or "",
                "must_refuse": -1 if self.must_refuse is None else int(self.must_refuse)}


def rollout_args(use_vllm: bool) -> dict[str, Any]:
    """TRL's arguments for how the rollouts are sampled: with align.grpo.use_vllm, by vLLM colocated in this process
    (TRL gives it vllm_gpu_memory_utilization of the GPU and copies the policy's weights into it before each
    generation); else, or with the reason when vLLM cannot run here, by the policy's own generate."""
    if not use_vllm:
        return {}
    try:
        vllm_module()
    except ReverieError as exc:
        status_line(f"align.grpo.use_vllm is on but {exc}; sampling the rollouts with the policy's own generate")
        return {}
    return {"use_vllm": True, "vllm_mode": "colocate"}


def train_grpo(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, prompts: list[RLPrompt],
               rewards: list[RewardFunction], settings: GRPOSettings, output_dir: Path,
               description: str = "grpo") -> PreferenceRun:
    """Sample `settings.generations` answers per prompt, score them with the summed `rewards`, and train with
    GRPO (or RLOO) and a KL penalty `settings.beta` to the model as it arrived."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    if not prompts:
        raise ReverieError("GRPO needs at least one prompt")
    quiet_libraries()
    config_type, trainer_type = (GRPOConfig, GRPOTrainer) if settings.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    batch = settings.prompts_per_step * settings.generations
    args = config_type(**_common_args(output_dir, settings.seed), per_device_train_batch_size=batch,
                       num_generations=settings.generations, max_completion_length=settings.max_new_tokens,
                       temperature=settings.temperature, beta=settings.beta, learning_rate=settings.learning_rate,
                       num_train_epochs=settings.epochs, **rollout_args(settings.use_vllm))
    dataset = Dataset.from_list([p.trl_row() for p in prompts])
    steps, elapsed = _run(lambda callbacks: trainer_type(model=model, reward_funcs=rewards, args=args,
                                                         train_dataset=dataset, processing_class=tokenizer,
                                                         callbacks=callbacks),
                          model, f"{description} ({len(prompts)} prompts x {settings.generations})",
                          -(-len(prompts) // settings.prompts_per_step) * settings.epochs, GRPO_LOGGED)
    completions = len(prompts) * settings.generations * settings.epochs
    lengths = [row["completion_length"] for row in steps if "completion_length" in row]
    tokens = sum(lengths) / len(lengths) * completions if lengths else 0.0
    metrics = _summary("grpo", steps, GRPO_LOGGED) | {
        "grpo_prompts": float(len(prompts)), "grpo_steps": float(len(steps)), "grpo_seconds": elapsed,
        "grpo_prompts_per_s": len(prompts) * settings.epochs / elapsed if elapsed else 0.0,
        "grpo_generated_tokens_per_s": tokens / elapsed if elapsed else 0.0,
    }
    return PreferenceRun(metrics, steps)
