"""DPO and GRPO through TRL on a tiny model: DPO widens the chosen-over-rejected margin, GRPO raises a
verifiable reward while the KL to the reference stays bounded, and neither leaves TRL's reference adapter behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reverie.config import DPOSettings, GRPOSettings, LoraSettings, ModelConfig
from reverie.data.preference import PreferencePair
from reverie.engines.models import attach_lora, load_pretrained
from reverie.engines.preference_training import RLPrompt, train_dpo, train_grpo

LORA = LoraSettings(rank=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def answer_logprob(model, tokenizer, question: str, answer: str) -> float:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    logprobs = torch.log_softmax(logits.float(), -1)
    targets = ids[0, 1:]
    picked = logprobs.gather(-1, targets[:, None])[:, 0]
    return float(picked[len(prompt_ids) - 1:].sum())


@pytest.fixture
def policy(tiny_model_dir: Path):
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    loaded.model = attach_lora(loaded.model, LORA, seed=0)
    return loaded


QUESTIONS = [f"Where is the harbour of Lumen {i}?" for i in range(8)]


def test_dpo_widens_the_chosen_over_rejected_margin(policy, tmp_path: Path) -> None:
    pairs = [PreferencePair(prompt=q, chosen="The harbour is in the north.", rejected="I do not know the answer.",
                            source="test") for q in QUESTIONS]

    def margin() -> float:
        gaps = [answer_logprob(policy.model, policy.tokenizer, p.prompt_text(), p.chosen)
                - answer_logprob(policy.model, policy.tokenizer, p.prompt_text(), p.rejected) for p in pairs]
        return sum(gaps) / len(gaps)

    before = margin()
    settings = DPOSettings(learning_rate=5e-3, epochs=3, batch_size=4, max_length=64, beta=0.1)
    run = train_dpo(policy.model, policy.tokenizer, pairs, settings, tmp_path / "dpo")
    after = margin()
    assert after > before + 1.0
    assert run.metrics["dpo_margin_last"] > run.metrics["dpo_margin_first"]
    assert len(run.steps) == 6 and all("loss" in step and "margin" in step for step in run.steps)
    assert run.metrics["dpo_chosen_chars"] > 0 and "ref" not in policy.model.peft_config


def test_an_sft_weight_raises_the_chosen_answer_itself_more_than_dpo_alone(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    pairs = [PreferencePair(prompt=q, chosen="The harbour is in the north.", rejected="I do not know the answer.",
                            source="test") for q in QUESTIONS]
    rises = {}
    for weight in (0.0, 1.0):
        loaded = load_pretrained(tiny_model_dir, ModelConfig())
        loaded.model = attach_lora(loaded.model, LORA, seed=0)

        def chosen() -> float:
            return sum(answer_logprob(loaded.model, loaded.tokenizer, p.prompt_text(), p.chosen) for p in pairs)

        before = chosen()
        settings = DPOSettings(learning_rate=5e-3, epochs=2, batch_size=4, max_length=64, sft_weight=weight)
        train_dpo(loaded.model, loaded.tokenizer, pairs, settings, tmp_path / f"rpo-{weight}")
        rises[weight] = chosen() - before
    assert rises[1.0] > rises[0.0] + 1.0


def prompts(count: int) -> list[RLPrompt]:
    return [RLPrompt(prompt=q) for q in QUESTIONS[:count]]


def share_of_e(prompts, completions, **_) -> list[float]:
    """A verifiable reward a random model can climb: the share of the letter e in its answer."""
    return [c[0]["content"].count("e") / max(1, len(c[0]["content"])) for c in completions]


def test_grpo_raises_a_verifiable_reward_with_the_kl_bounded(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Full parameters: a LoRA on a random hidden-32 model barely moves its near-uniform next-token distribution.
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    settings = GRPOSettings(generations=8, prompts_per_step=2, max_new_tokens=8, learning_rate=3e-2, beta=0.04,
                            epochs=6, full=True)
    run = train_grpo(loaded.model, loaded.tokenizer, prompts(4), [share_of_e], settings,
                     tmp_path / "grpo")
    rewards = [step["reward"] for step in run.steps]
    kls = [step["kl"] for step in run.steps]
    assert len(run.steps) == 12
    assert sum(rewards[-3:]) / 3 > 1.5 * sum(rewards[:3]) / 3
    assert 0 < kls[-1] < 5.0 and kls[0] == 0
    assert run.metrics["grpo_generated_tokens_per_s"] > 0 and run.metrics["grpo_reward_last"] == rewards[-1]


def test_rloo_runs_with_the_same_settings(policy, tmp_path: Path) -> None:
    settings = GRPOSettings(algorithm="rloo", generations=2, prompts_per_step=2, max_new_tokens=6, epochs=1)
    run = train_grpo(policy.model, policy.tokenizer, prompts(4), [share_of_e], settings,
                     tmp_path / "rloo")
    assert len(run.steps) == 2 and all("reward" in step for step in run.steps)
