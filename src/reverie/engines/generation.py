"""Batched generation: prompts sorted by length and left-padded, greedy or sampled."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.progress import progress_bar


GREEDY_BELOW = 1e-3  # logits / 1e-45 overflow to inf and NaN probabilities; this close to 0, greedy is the limit


def sampling_kwargs(temperature: float, top_p: float = 1.0) -> dict:
    """`model.generate` arguments for sampling at `temperature` (within nucleus `top_p`), or greedy decoding when
    either is (nearly) 0."""
    if temperature >= GREEDY_BELOW and top_p > 0:
        return {"do_sample": True, "temperature": temperature, "top_k": 0} | ({"top_p": top_p} if top_p < 1 else {})
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
    description: str = "generate",
    exact: bool = False,
) -> list[list[str]]:
    """Return `samples` completions per prompt (greedy when temperature is 0), in the prompts' order. `exact`
    decodes max_new_tokens for every prompt, past the end-of-turn token: what a decode-speed measurement needs.

    `model` is a transformers model or any runtime with the same `generate` (engines/llama_cpp_runtime.py)."""
    torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[str]] = [[] for _ in prompts]
    pad = tokenizer.pad_token_id
    with progress_bar(description, len(prompts)) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk], device=model.device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk],
                                device=model.device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                min_new_tokens=max_new_tokens if exact else None,
                **sampling_kwargs(temperature),
            )
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for j, index in enumerate(chunk):
                results[index] = [t.strip() for t in texts[j * samples : (j + 1) * samples]]
            bar.advance(len(chunk))
    return results
