"""Safetensors to GGUF, and GGUF to a quantized GGUF, so that llama.cpp can run a model version.

`write_gguf` does for a Llama-family directory what llama.cpp's convert_hf_to_gguf.py does for LlamaModel (arch
"llama" metadata, llama.cpp tensor names, Q/K rows permuted for llama.cpp's rotary layout, a byte-level BPE
tokenizer); `quantize_gguf` hands the result to llama.cpp's own quantizer.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from safetensors import safe_open

from reverie.errors import ReverieError

GGUF_DTYPES = ("f32", "f16")
QUANT_FORMATS = ("q8_0", "q4_0", "q4_k_m")
SUPPORTED_MODEL_TYPES = ("llama",)  # SmolLM2, TinyLlama-style BPE, Llama 2/3 shapes without rope scaling
UNUSED_TENSORS = ("rotary_emb.inv_freq",)  # recomputed by llama.cpp from rope.freq_base


@contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    """A temporary path beside `out`, moved onto it only when the body finished."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield staging
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ReverieError(f"{path} is missing (a Hugging Face model directory needs it)")
    return json.loads(path.read_text())


def _permute(weights: torch.Tensor, n_head: int, n_head_kv: int | None) -> torch.Tensor:
    """HF's rotate-half Q/K rows to llama.cpp's interleaved-pair rows (convert_hf_to_gguf.py LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _rope_theta(config: dict) -> float:
    """rope_theta, rejecting rope scaling this writer does not carry over (transformers 5 keeps it in
    rope_parameters, older configs at the top level beside rope_scaling)."""
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ReverieError(f"config.json rope type {kind!r} is not supported for GGUF export (only 'default')")
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def _pre_tokenizer_name(tokenizer_json: dict, path: Path) -> str:
    """The `tokenizer.ggml.pre` llama.cpp uses to split text as this tokenizer does: "gpt-2" for byte-level BPE
    with GPT-2's split, "smollm" when digits are split one by one first (SmolLM2, StarCoder)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(p.get("type"), p.get("individual_digits"), p.get("use_regex")) for p in parts]
    if kinds == [("ByteLevel", None, True)]:
        return "gpt-2"
    if kinds == [("Digits", True, None), ("ByteLevel", None, True)]:
        return "smollm"
    raise ReverieError(f"{path}: pre-tokenizer {[k[0] for k in kinds]} is not supported for GGUF export "
                       "(supported: byte-level BPE with GPT-2's split, optionally after single-digit splitting)")


def _add_tokenizer(writer, model_dir: Path, vocab_size: int) -> None:
    """tokenizer.json as llama.cpp's "gpt2" (byte-level BPE) vocabulary: tokens padded to the model's vocab_size,
    special added tokens marked CONTROL, merges, the special ids, the chat template; add_bos off (reverie
    templates prompts itself)."""
    import gguf
    from transformers import AutoTokenizer

    path = model_dir / "tokenizer.json"
    tokenizer_json = _read_json(path)
    if tokenizer_json.get("model", {}).get("type") != "BPE":
        raise ReverieError(f"{path}: tokenizer model {tokenizer_json.get('model', {}).get('type')!r} is not "
                           "supported for GGUF export (only byte-level BPE)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = {token["id"]: token for token in tokenizer_json.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL if i not in added else
                         gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer_json, path))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "unk", "pad"):
        if (token_id := getattr(tokenizer, f"{kind}_token_id")) is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(False)
    if isinstance(tokenizer.chat_template, str):
        writer.add_chat_template(tokenizer.chat_template)


def _safetensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ReverieError(f"{model_dir} has no .safetensors weights to export")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def write_gguf(model_dir: Path, out: Path, dtype: Literal["f32", "f16"] = "f32") -> Path:
    """Write a Llama-family safetensors directory as one GGUF file (weights in `dtype`, norms always F32) that
    llama.cpp runs and transformers loads back (`from_pretrained(dir, gguf_file=name)`)."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ReverieError(f"GGUF dtype {dtype!r} is not supported (choose one of {', '.join(GGUF_DTYPES)})")
    config = _read_json(model_dir / "config.json")
    if (model_type := config.get("model_type")) not in SUPPORTED_MODEL_TYPES:
        raise ReverieError(f"{model_dir / 'config.json'}: model_type {model_type!r} cannot be exported to GGUF "
                           f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    n_head, n_layer = config["num_attention_heads"], config["num_hidden_layers"]
    n_head_kv = config.get("num_key_value_heads", n_head)
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    tied = config.get("tie_word_embeddings", False)
    file_type = gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    with _atomic(out) as staging:
        writer = gguf.GGUFWriter(staging, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(model_dir.name)
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_block_count(n_layer)
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        if head_dim != config["hidden_size"] // n_head:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
        writer.add_vocab_size(config["vocab_size"])
        writer.add_file_type(file_type)
        _add_tokenizer(writer, model_dir, config["vocab_size"])
        for name, tensor in _safetensors(model_dir):
            if name.endswith(UNUSED_TENSORS) or (tied and name == "lm_head.weight"):
                continue
            gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ReverieError(f"{model_dir}: tensor {name!r} has no llama.cpp name; not a plain Llama model")
            tensor = tensor.float()
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                tensor = _permute(tensor, n_head, n_head)
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                tensor = _permute(tensor, n_head, n_head_kv)
            data = tensor.numpy()
            writer.add_tensor(gguf_name, data if dtype == "f32" or data.ndim == 1 else data.astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def quantize_gguf(source: Path, out: Path, fmt: Literal["q8_0", "q4_0", "q4_k_m"]) -> Path:
    """Quantize a GGUF with llama.cpp's quantizer (norms and other 1-D tensors stay F32; a K-quant falls back
    to a legacy type for a tensor whose rows are not a multiple of 256)."""
    from reverie.engines.llama_cpp_runtime import llama_cpp_module

    if fmt not in QUANT_FORMATS:
        raise ReverieError(f"quantization format {fmt!r} is not supported (choose one of {', '.join(QUANT_FORMATS)})")
    if not source.is_file():
        raise ReverieError(f"{source}: no such GGUF file to quantize")
    lib = llama_cpp_module()
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{fmt.upper()}")
    params.nthread = os.cpu_count() or 1
    with _atomic(out) as staging:
        if (code := lib.llama_model_quantize(str(source).encode(), str(staging).encode(), params)) != 0:
            raise ReverieError(f"llama.cpp could not quantize {source} to {fmt} (code {code})")
    return out


def gguf_file_type(path: Path) -> str:
    """What a GGUF holds, as a lower-case llama.cpp file type ("f32", "f16", "q8_0", "q4_k_m", ...): its
    general.file_type, or else the most common type among its matrices."""
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.get_field(gguf.Keys.General.FILE_TYPE)
    if field is not None:
        name = gguf.LlamaFileType(int(field.contents())).name
        return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    matrices = [t.tensor_type.name for t in reader.tensors if len(t.shape) > 1]
    return max(set(matrices), key=matrices.count).lower() if matrices else "f32"
