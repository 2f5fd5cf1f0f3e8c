"""A GGUF model run by llama.cpp behind the two entry points reverie calls on a transformers model: `generate`
(token ids in, token ids out, shaped as transformers returns them) and `__call__` (logits). The Gate's suites,
Dream's sampling and the server then run a quantized variant unchanged, at llama.cpp's speed on a CPU.

Rows of a batch decode together: each row is its own llama.cpp sequence (seq_id) in one context, so one
`llama_decode` per step advances every unfinished row. Inference only; training loads the safetensors weights.
"""

from __future__ import annotations

import ctypes
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import CausalLMOutput

from reverie.engines.generate_rows import HF_TOP_K, requested_rows
from reverie.errors import ReverieError

CONTEXT_STEP = 256  # llama.cpp pads contexts to this many cells; contexts grow in these steps and are reused
UBATCH = 512  # tokens per physical forward pass (prompt processing); llama.cpp's default


def llama_cpp_module() -> Any:
    """The llama_cpp package (an optional extra, imported only where a GGUF is run or quantized)."""
    try:
        import llama_cpp
    except ImportError:
        raise ReverieError("running or quantizing a GGUF model needs llama.cpp: pip install 'reverie[llama]' "
                           "(llama-cpp-python builds from source)") from None
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # verbose=False: llama.cpp logs errors only
    return llama_cpp


@dataclass(frozen=True)
class LlamaCppConfig:
    """What callers read from `model.config`, taken from the GGUF as llama.cpp loaded it.
    max_position_embeddings is the context this runtime holds per row (n_ctx, at most the trained length)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_id: int | None


class _Native:
    """The llama.cpp objects behind one model; freed in order (batch, context, model) when the model goes."""

    def __init__(self, lib: Any, model: Any):
        self.lib, self.model = lib, model
        self.context: Any = None
        self.batch: Any = None
        self.shape = (0, 0)  # (sequences, cells per sequence) of the current context
        self.opened: list[tuple[Any, Any]] = []  # (context, batch) pairs of open_context, kept across calls

    def free_context(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        if self.context is not None:
            self.lib.llama_free(self.context)
            self.context = None
        self.shape = (0, 0)

    def close_opened(self, opened: tuple[Any, Any]) -> None:
        if opened in self.opened:
            self.opened.remove(opened)
            self.lib.llama_batch_free(opened[1])
            self.lib.llama_free(opened[0])

    def close(self) -> None:
        self.free_context()
        for opened in list(self.opened):  # every context goes before the model it was made from
            self.close_opened(opened)
        if self.model is not None:
            self.lib.llama_model_free(self.model)
            self.model = None


class LlamaCppModel:
    """A GGUF model run by llama.cpp, with transformers' `generate` and `__call__` for inference.

    `n_ctx` is the most tokens one row may hold (prompt plus new tokens); `n_threads` defaults to every core.
    Sampling seeds come from the `seed` keyword of `generate` or else from torch's default generator, so that
    `torch.manual_seed(s)` makes a sampled run repeat, as it does with transformers."""

    device = torch.device("cpu")
    dtype = torch.float32  # of the logits it returns
    training = False

    def __init__(self, gguf_path: Path, n_ctx: int = 2048, n_threads: int | None = None):
        lib = llama_cpp_module()
        if not Path(gguf_path).is_file():
            raise ReverieError(f"{gguf_path}: no such GGUF file")
        self.path = Path(gguf_path)
        self.n_threads = n_threads or os.cpu_count() or 1
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        model = lib.llama_model_load_from_file(str(self.path).encode(), params)
        if not model:
            raise ReverieError(f"{self.path}: llama.cpp could not load this GGUF (see the error above)")
        self._lib = lib
        self._native = _Native(lib, model)
        weakref.finalize(self, self._native.close)
        vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = lib.llama_vocab_n_tokens(vocab)
        self.n_ctx = min(n_ctx, lib.llama_model_n_ctx_train(model))
        # An F32 file keeps F32 numbers end to end (KV cache in F32, no flash attention, which rounds Q to F16),
        # so it reproduces transformers' float32 logits and serves as the reference its quantized variants are
        # measured against; other files take llama.cpp's defaults (F16 KV cache, flash attention where it helps).
        self.exact = self._meta("general.file_type") == str(lib.LLAMA_FTYPE_ALL_F32)
        self.config = LlamaCppConfig(
            model_type=self._meta("general.architecture") or "llama",
            vocab_size=self.n_vocab,
            hidden_size=lib.llama_model_n_embd(model),
            num_hidden_layers=lib.llama_model_n_layer(model),
            max_position_embeddings=self.n_ctx,
            bos_token_id=_token_or_none(lib.llama_vocab_bos(vocab)),
            eos_token_id=_token_or_none(lib.llama_vocab_eos(vocab)),
        )

    def __repr__(self) -> str:
        return f"LlamaCppModel({self.path.name}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_model_meta_val_str(self._native.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def eval(self) -> LlamaCppModel:
        return self

    def parameters(self):
        raise ReverieError("a llama.cpp model is for inference only; training loads the safetensors weights")

    def weight_bytes(self) -> int:
        """Bytes of the weights as llama.cpp holds them (the quantized size)."""
        return int(self._lib.llama_model_size(self._native.model))

    # --- llama.cpp plumbing -------------------------------------------------------------------------------

    def _context(self, sequences: int, cells: int) -> Any:
        """A context for `sequences` rows of up to `cells` tokens each, empty; the last one is reused when it
        is big enough. Each sequence has its own KV stream (kv_unified off), so rows never attend to each other
        and a row's attention costs what its own length costs."""
        native, lib = self._native, self._lib
        if native.shape[0] >= sequences and native.shape[1] >= cells:
            lib.llama_memory_clear(lib.llama_get_memory(native.context), True)
            return native.context
        sequences = max(sequences, native.shape[0])
        cells = max(-(-cells // CONTEXT_STEP) * CONTEXT_STEP, native.shape[1])
        native.free_context()
        native.context, native.batch = self._new_context(sequences, cells)
        native.shape = (sequences, cells)
        return native.context

    def _new_context(self, sequences: int, cells: int) -> tuple[Any, Any]:
        """A fresh context (and a batch buffer as large) of `sequences` KV streams of `cells` tokens each."""
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = sequences * cells
        params.n_batch = sequences * cells  # a whole prefill is one llama_decode; it splits it into ubatches
        params.n_ubatch = UBATCH
        params.n_seq_max = sequences
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = self.n_threads
        params.no_perf = True
        if self.exact:
            params.type_k = params.type_v = lib.GGML_TYPE_F32
            params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        context = lib.llama_init_from_model(self._native.model, params)
        if not context:
            raise ReverieError(f"{self.path}: llama.cpp could not make a context of {sequences} x {cells} tokens")
        return context, lib.llama_batch_init(sequences * cells, 0, 1)

    def open_context(self, sequences: int, cells: int) -> tuple[Any, Any]:
        """A (context, batch) of its own, made as generate's is, for a caller that keeps its sequences across calls
        (engines/llama_cpp_continuous.py); generate and __call__ never touch it. Freed by close_context, or with
        the model at the latest."""
        opened = self._new_context(sequences, -(-cells // CONTEXT_STEP) * CONTEXT_STEP)
        self._native.opened.append(opened)
        return opened

    def close_context(self, opened: tuple[Any, Any]) -> None:
        self._native.close_opened(opened)

    def _decode(self, context: Any, entries: list[tuple[int, int, int, bool]]) -> None:
        self.decode(context, self._native.batch, entries)

    def decode(self, context: Any, batch: Any, entries: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, sequence, position, wants logits) entries through `batch`."""
        for i, (token, sequence, position, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.logits[i] = token, position, logits
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, sequence
        batch.n_tokens = len(entries)
        if (code := self._lib.llama_decode(context, batch)) != 0:
            raise RuntimeError(f"llama_decode failed with code {code} on {self.path.name}")

    def sampler(self, do_sample: bool, temperature: float | None, top_p: float | None, top_k: int | None,
                seed: int, suppress: list[int]) -> Any:
        """A llama.cpp sampler chain applied as transformers does: eos suppressed (min_new_tokens; always the
        chain's first link, removed once the minimum is reached), then temperature, top-k, top-p, a draw."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if suppress:
            biases = (lib.llama_logit_bias * len(suppress))()
            for bias, token in zip(biases, suppress):
                bias.token, bias.bias = token, float("-inf")
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(self.n_vocab, len(suppress), biases))
        if not do_sample:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        if temperature is not None and temperature != 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
        if (k := HF_TOP_K if top_k is None else top_k) > 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(k))
        if top_p is not None and top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

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
        sequence or a stopping criterion) padded with pad_token_id to the batch's length. `streamer` gets the
        prompt, then each step's tokens, then `end()`, as from transformers; `stopping_criteria` are called
        after each step with the ids so far."""
        rows = requested_rows(input_ids, attention_mask, num_return_sequences,
                              eos_token_id if eos_token_id is not None else self.config.eos_token_id,
                              pad_token_id, seed)
        longest = rows.longest(max_new_tokens)
        if longest > self.n_ctx:
            raise ReverieError(f"{longest} tokens (prompt plus max_new_tokens) exceed this llama.cpp model's "
                               f"context of {self.n_ctx} (LlamaCppModel n_ctx)")
        if streamer is not None:
            streamer.put(input_ids.cpu())
        new: list[list[int]] = []
        group = self._lib.llama_max_parallel_sequences()  # sequences one llama.cpp context can hold
        for start in range(0, len(rows.prompts), group):
            new += self._decode_rows(rows.prompts[start : start + group], rows.padded[start : start + group],
                                     max_new_tokens, min_new_tokens or 0, rows.eos, rows.pad, do_sample, temperature,
                                     top_p, top_k, rows.seed + start, streamer, stopping_criteria)
        if streamer is not None:
            streamer.end()
        return rows.returned(new)

    def _decode_rows(self, prompts: list[list[int]], padded: list[list[int]], max_new: int, min_new: int,
                     eos: list[int], pad: int, do_sample: bool, temperature: float | None, top_p: float | None,
                     top_k: int | None, seed: int, streamer: Any, stopping_criteria: Any) -> list[list[int]]:
        """New tokens of each row, every unfinished row advanced by one llama_decode per step."""
        lib, n = self._lib, len(prompts)
        context = self._context(n, max(map(len, prompts)) + max_new)
        suppress = eos if min_new else []
        samplers = [self.sampler(do_sample, temperature, top_p, top_k, seed + i, suppress) for i in range(n)]
        try:
            entries, logit_at = [], {}
            for s, prompt in enumerate(prompts):
                entries += [(token, s, p, p == len(prompt) - 1) for p, token in enumerate(prompt)]
                logit_at[s] = len(entries) - 1
            self._decode(context, entries)
            new: list[list[int]] = [[] for _ in prompts]
            for step in range(max_new):
                if step == min_new and suppress:
                    for sampler in samplers:
                        lib.llama_sampler_free(lib.llama_sampler_chain_remove(sampler, 0))
                tokens = [pad] * n
                for s, index in logit_at.items():
                    tokens[s] = lib.llama_sampler_sample(samplers[s], context, index)
                    new[s].append(tokens[s])
                if streamer is not None:
                    streamer.put(torch.tensor(tokens))
                finished = {s for s in logit_at if tokens[s] in eos}
                if stopping_criteria:  # transformers' list; an empty one stops nothing
                    ids = torch.tensor([row + t + [pad] * (step + 1 - len(t)) for row, t in zip(padded, new)])
                    stopped = stopping_criteria(ids, None)
                    finished |= {s for s in logit_at if bool(stopped[s])}
                running = [s for s in logit_at if s not in finished]
                if not running or step == max_new - 1:
                    break
                self._decode(context, [(tokens[s], s, len(prompts[s]) + step, True) for s in running])
                logit_at = {s: i for i, s in enumerate(running)}
            return new
        finally:
            for sampler in samplers:
                lib.llama_sampler_free(sampler)

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **ignored: Any) -> CausalLMOutput:
        """Logits [batch, seq, vocab] (float32) for every unmasked token, at the same place as transformers puts
        them whether rows are left- or right-padded; masked places hold zeros. One llama_decode for the batch."""
        mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).bool()
        rows = [row[keep].tolist() for row, keep in zip(input_ids, mask)]
        longest = max(map(len, rows))
        if longest > self.n_ctx:
            raise ReverieError(f"{longest} tokens exceed this llama.cpp model's context of {self.n_ctx}")
        logits = torch.zeros(*input_ids.shape, self.n_vocab, dtype=torch.float32)
        entries = [(token, s, p, True) for s, row in enumerate(rows) for p, token in enumerate(row)]
        if entries:
            context = self._context(len(rows), longest)
            self._decode(context, entries)
            flat = np.ctypeslib.as_array(self._lib.llama_get_logits(context), shape=(len(entries), self.n_vocab))
            logits[mask] = torch.from_numpy(flat.copy())
        return CausalLMOutput(logits=logits)


def _token_or_none(token: int) -> int | None:
    return token if token >= 0 else None  # llama.cpp's LLAMA_TOKEN_NULL is -1
