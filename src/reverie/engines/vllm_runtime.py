"""A float model version run by vLLM on a GPU behind the two entry points reverie calls on a transformers model:
`generate` (token ids in, token ids out, shaped as transformers returns them) and `__call__` (logits). The Gate's
suites, Dream's sampling and the server then generate at vLLM's speed unchanged.

vLLM's offline engine takes whole requests: it cannot call transformers' stopping criteria or feed a streamer as
it decodes, so both are replayed on its output (see `VllmModel.generate`). It returns sampled tokens and at most
the top log-probabilities of each, never full logits, so `__call__` runs a transformers copy of the same weights.
Inference only; training loads the safetensors weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from transformers import AutoConfig
from transformers.modeling_outputs import CausalLMOutput

from reverie.config import ModelConfig
from reverie.engines.generate_rows import HF_TOP_K, RequestedRows, requested_rows
from reverie.errors import ReverieError

GPU_MEMORY_SHARE = 0.4  # of the GPU for vLLM's weights and KV cache (at most 90% of what is free as it starts); the
# rest holds the transformers copy that gives logits, and training in the same process
MAX_MODEL_LEN = 4096  # tokens per row (prompt plus new tokens), at most the trained length: bounds the KV cache


def vllm_module() -> Any:
    """The vllm package (the `vllm` extra), on a machine where torch sees a CUDA device; checked in that order, so a
    CPU machine never pays for importing vLLM."""
    if not torch.cuda.is_available():
        raise ReverieError("vLLM needs a CUDA GPU and torch sees none here")
    try:
        import vllm
    except ModuleNotFoundError:
        raise ReverieError("vLLM is not installed: pip install 'reverie[vllm]' (Linux with a CUDA GPU)") from None
    except (ImportError, OSError, RuntimeError) as exc:  # an install that does not match this torch or CUDA
        raise ReverieError(f"vLLM does not import here ({type(exc).__name__}: {exc})") from None
    return vllm


class VllmModel:
    """A safetensors model directory run by vLLM, with transformers' `generate` and `__call__` for inference.

    `reference` loads the transformers model that `__call__` takes its logits from, on the GPU, once, on first use
    (vLLM does not return full logits). Sampling seeds come from the `seed` keyword of `generate` or else from
    torch's default generator, so that `torch.manual_seed(s)` makes a sampled run repeat, as it does with
    transformers (vLLM's samples differ from transformers' for the same seed)."""

    training = False

    def __init__(self, directory: Path, config: ModelConfig, reference: Callable[[], torch.nn.Module],
                 max_model_len: int = MAX_MODEL_LEN):
        vllm = vllm_module()
        self.path = Path(directory)
        self.device = torch.device("cuda")
        self.dtype = getattr(torch, config.dtype)
        # what callers read from model.config; max_position_embeddings is the context vLLM holds per row
        self.config = AutoConfig.from_pretrained(self.path, trust_remote_code=config.trust_remote_code)
        self.max_model_len = min(max_model_len, getattr(self.config, "max_position_embeddings", None) or max_model_len)
        self.config.max_position_embeddings = self.max_model_len
        free, total = torch.cuda.mem_get_info()
        try:
            self.llm = vllm.LLM(model=str(self.path), tokenizer=str(self.path), dtype=config.dtype, seed=0,
                                max_model_len=self.max_model_len, trust_remote_code=config.trust_remote_code,
                                gpu_memory_utilization=min(GPU_MEMORY_SHARE, 0.9 * free / total))
        except Exception as exc:  # vLLM raises many types for a model or a machine it cannot serve
            raise ReverieError(f"{self.path}: vLLM could not load it ({type(exc).__name__}: {exc})") from None
        self._vllm = vllm
        self._load_reference = reference
        self._reference: torch.nn.Module | None = None

    def __repr__(self) -> str:
        return f"VllmModel({self.path.name}, max_model_len={self.max_model_len})"

    def eval(self) -> VllmModel:
        return self

    def parameters(self):
        raise ReverieError("a vLLM model is for inference only; training loads the safetensors weights")

    def weight_bytes(self) -> int:
        """Bytes of the weights as vLLM holds them: every tensor of the safetensors files, in model.dtype."""
        elements = 0
        for file in self.path.glob("*.safetensors"):
            with safe_open(file, framework="pt") as handle:  # reads the header, not the tensors
                elements += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
        return elements * self.dtype.itemsize

    def reference(self) -> torch.nn.Module:
        """The transformers copy `__call__` runs, loaded on first use."""
        if self._reference is None:
            self._reference = self._load_reference()
        return self._reference

    # --- transformers' entry points -----------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 20, min_new_tokens: int | None = None, num_return_sequences: int = 1,
                 pad_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
                 do_sample: bool = False, temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None, streamer: Any = None, stopping_criteria: Any = None,
                 seed: int | None = None, **ignored: Any) -> torch.LongTensor:
        """transformers' `generate` for decoder-only models: each (left-padded) row followed by its new tokens,
        rows repeated num_return_sequences times in place (r0, r0, r1, r1, ...), and a row that ended (end of
        sequence or a stopping criterion) padded with pad_token_id to the batch's length.

        vLLM generates every row to its end first. `stopping_criteria` are then called as transformers calls them,
        after each step with the ids so far, and a row is cut after the step where one fires; `streamer` then gets
        the prompt, each step's tokens and `end()`, all at once rather than as they are made."""
        eos = eos_token_id if eos_token_id is not None else self.config.eos_token_id
        rows = requested_rows(input_ids, attention_mask, num_return_sequences, eos, pad_token_id, seed)
        if (longest := rows.longest(max_new_tokens)) > self.max_model_len:
            raise ReverieError(f"{longest} tokens (prompt plus max_new_tokens) exceed this vLLM model's context of "
                               f"{self.max_model_len} (VllmModel max_model_len)")
        params = [self._sampling(max_new_tokens, min_new_tokens or 0, rows.eos, do_sample, temperature, top_p, top_k,
                                 rows.seed + i) for i in range(len(rows.prompts))]
        requests = [self._vllm.TokensPrompt(prompt_token_ids=prompt) for prompt in rows.prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        new = [list(output.outputs[0].token_ids) for output in outputs]
        if stopping_criteria:  # transformers' list; an empty one stops nothing
            new = _cut_where_stopped(rows, new, stopping_criteria)
        if streamer is not None:
            streamer.put(input_ids.cpu())
            for step in range(max(map(len, new))):
                streamer.put(torch.tensor([tokens[step] if step < len(tokens) else rows.pad for tokens in new]))
            streamer.end()
        return rows.returned(new, input_ids.device)

    def _sampling(self, max_new: int, min_new: int, eos: list[int], do_sample: bool, temperature: float | None,
                  top_p: float | None, top_k: int | None, seed: int) -> Any:
        """vLLM's SamplingParams for one row, as transformers samples: `eos` (and only it) ends a row, not before
        min_new tokens; greedy, or temperature then top-k (transformers' 50 when unset, 0 for none) then top-p."""
        common = {"max_tokens": max_new, "min_tokens": min(min_new, max_new), "stop_token_ids": eos,
                  "ignore_eos": True, "detokenize": False}  # ignore_eos: the model's own eos stops nothing
        if not do_sample:
            return self._vllm.SamplingParams(temperature=0.0, **common)
        k = HF_TOP_K if top_k is None else top_k
        return self._vllm.SamplingParams(temperature=1.0 if temperature is None else temperature,
                                         top_p=1.0 if top_p is None else top_p, top_k=k if k > 0 else -1,
                                         seed=seed, **common)

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> CausalLMOutput:
        """Logits [batch, seq, vocab] from the transformers copy of the same weights (`reference`), on its device:
        vLLM returns sampled tokens and their top log-probabilities, never the full logits."""
        model = self.reference()
        return model(input_ids=input_ids.to(model.device),
                     attention_mask=None if attention_mask is None else attention_mask.to(model.device), **kwargs)


def _cut_where_stopped(rows: RequestedRows, new: list[list[int]], stopping_criteria: Any) -> list[list[int]]:
    """Each row's new tokens up to the step where `stopping_criteria` first fire for it, that step's token kept:
    the criteria see what transformers shows them after each step (every row's ids so far, a row that has ended
    padded), and a row that ended stays ended."""
    ends = [len(tokens) for tokens in new]
    for step in range(max(ends)):
        running = [s for s, end in enumerate(ends) if end > step]
        if not running:
            break
        ids = rows.returned([tokens[: min(end, step + 1)] for tokens, end in zip(new, ends)])  # step + 1 new tokens
        stopped = stopping_criteria(ids, None)
        for s in running:
            if bool(stopped[s]):
                ends[s] = step + 1
    return [tokens[:end] for tokens, end in zip(new, ends)]
