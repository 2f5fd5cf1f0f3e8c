"""transformers' `generate` contract for the runtimes that are not transformers (llama.cpp, vLLM): the rows a call
asks for, and the tensor of rows it returns, so that every runtime reads and shapes them the same way."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reverie.errors import ReverieError

HF_TOP_K = 50  # transformers' GenerationConfig default, for a sampling call that leaves top_k unset


@dataclass(frozen=True)
class RequestedRows:
    """What one `generate` call asks for: every input row repeated num_return_sequences times in place (r0, r0, r1,
    r1, ...), as given (left-padded) and without its padding; the tokens that end a row, the one that pads it, and
    the seed of the first row (row i draws with seed + i)."""

    padded: list[list[int]]
    prompts: list[list[int]]
    eos: list[int]
    pad: int
    seed: int

    def longest(self, max_new_tokens: int) -> int:
        """Tokens the longest row may hold: its prompt plus max_new_tokens."""
        return max(map(len, self.prompts)) + max_new_tokens

    def returned(self, new: list[list[int]], device: torch.device | str = "cpu") -> torch.LongTensor:
        """The rows followed by their new tokens, a row that ended early padded to the batch's length."""
        steps, pad = max(map(len, new)), self.pad
        return torch.tensor([row + tokens + [pad] * (steps - len(tokens)) for row, tokens in zip(self.padded, new)],
                            dtype=torch.long, device=device)


def requested_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, num_return_sequences: int,
                   eos_token_id: int | list[int] | torch.Tensor | None, pad_token_id: int | None,
                   seed: int | None) -> RequestedRows:
    """The rows of a `generate` call, eos as a list (the model's own when the call names none: pass it as
    eos_token_id), pad falling back to the first eos as transformers does, and a seed drawn from torch's default
    generator when the call gives none, so that `torch.manual_seed(s)` makes a sampled run repeat."""
    rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
    mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask)
    mask = mask.repeat_interleave(num_return_sequences, dim=0).bool()
    prompts = [row[keep].tolist() for row, keep in zip(rows, mask)]
    if any(not prompt for prompt in prompts):
        raise ReverieError("generate needs at least one unmasked prompt token in every row")
    eos = token_list(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    if seed is None:
        seed = int(torch.randint(2**31 - 1, ()).item())
    return RequestedRows(rows.tolist(), prompts, eos, pad, seed)


def token_list(tokens: int | list[int] | torch.Tensor | None) -> list[int]:
    if tokens is None:
        return []
    if isinstance(tokens, torch.Tensor):
        return tokens.flatten().tolist()
    return [tokens] if isinstance(tokens, int) else list(tokens)
