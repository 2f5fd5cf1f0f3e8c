"""Model loading and LoRA adapters on a tiny random Llama built in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from reverie.config import LoraSettings, ModelConfig
from reverie.engines.models import attach_lora, load_pretrained, reset_lora, resolve_source
from reverie.errors import ReverieError


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_loads_tiny_model_from_directory(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = resolve_source(str(tiny_model_dir), tmp_path, tmp_path)
    loaded = load_pretrained(path, ModelConfig())
    assert loaded.model.config.num_hidden_layers == 2


def test_a_tokenizer_without_a_pad_token_pads_with_its_end_token(tiny_model_dir: Path, tmp_path: Path) -> None:
    unpadded = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir, unpadded)
    settings = json.loads((unpadded / "tokenizer_config.json").read_text())
    del settings["pad_token"]
    (unpadded / "tokenizer_config.json").write_text(json.dumps(settings))
    tokenizer = load_pretrained(unpadded, ModelConfig()).tokenizer
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"  # batched generation needs one


def test_refuses_a_directory_without_safetensors(tiny_model_dir: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for file in pickled.glob("*.safetensors"):
        file.rename(file.with_suffix(".bin"))
    with pytest.raises(ReverieError, match="only safetensors are loaded"):
        resolve_source(str(pickled), tmp_path, tmp_path)


def test_uncached_hub_id_is_a_clear_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ReverieError, match="never downloads at run time"):
        resolve_source("some-org/some-model", tmp_path, tmp_path)


def test_missing_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReverieError, match="missing.gguf does not exist"):
        resolve_source("missing.gguf", tmp_path, tmp_path)


def test_lora_starts_as_identity_and_reset_restores_it(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    ids = torch.tensor([[1, 5, 9, 14, 30]])
    base = logits(loaded.model, ids)
    model = attach_lora(loaded.model, LoraSettings(rank=4, alpha=8), seed=0)
    assert torch.allclose(logits(model, ids), base)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_()
    assert not torch.allclose(logits(model, ids), base)
    reset_lora(model, seed=1)
    assert torch.allclose(logits(model, ids), base)


def test_a_model_that_ships_code_is_refused_without_running_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A model directory whose config names its own Python file: with the default config that file never runs.
    shipped = tmp_path / "ships-code"
    shutil.copytree(tiny_model_dir, shipped)
    config = json.loads((shipped / "config.json").read_text())
    config |= {"model_type": "shipped-llama",
               "auto_map": {"AutoConfig": "shipped.ShippedConfig", "AutoModelForCausalLM": "shipped.ShippedModel"}}
    (shipped / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "shipped-code-ran"
    (shipped / "shipped.py").write_text(f"from pathlib import Path\nPath({str(ran)!r}).write_text('ran')\n")
    with pytest.raises(ReverieError, match="see model.trust_remote_code"):
        load_pretrained(shipped, ModelConfig())
    assert not ran.exists()


def test_cached_hub_id_loads_offline(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The layout huggingface_hub writes when a model is downloaded: refs/main names a snapshot folder.
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    path = resolve_source("acme/tiny-llama", tmp_path, tmp_path)
    assert path == snapshot
    assert load_pretrained(path, ModelConfig()).model.config.num_hidden_layers == 2
