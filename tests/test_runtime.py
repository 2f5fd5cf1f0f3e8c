"""model.runtime llama.cpp: float versions (adapters merged) run by llama.cpp on an f16 GGUF made once per version,
behind the same generate and forward; a cycle runs its Gate on it. model.device: cuda asked for without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reverie.cycle import ensure_release, run_cycle
from reverie.engines.llama_cpp_runtime import LlamaCppModel
from reverie.engines.models import load_version
from reverie.engines.prompts import user_prompt_ids
from reverie.errors import ReverieError
from reverie.workspace import Workspace

from conftest import make_workspace


@torch.inference_mode()
def logits(model, tokenizer) -> torch.Tensor:
    return model(input_ids=torch.tensor([user_prompt_ids(tokenizer, "Where is the lighthouse?")])).logits.float()


def test_llama_cpp_runtime_serves_float_and_adapter_versions(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny_model_dir, model={"runtime": "llama.cpp"}, dream={"enabled": False},
                          serve={"retrieval": False}, compress={"strategies": []})
    ws = Workspace.open(root)
    outcome = run_cycle(ws)  # the Gate measured the candidate and the release through llama.cpp
    learned = ws.registry.get_model(next(r for r in ws.registry.phase_runs(outcome.cycle_id)
                                         if r.phase == "learn").outputs["model"])
    assert learned.adapter  # compress.strategies []: the candidate kept its adapter, merged for llama.cpp
    for record in (ws.registry.get_model(learned.parent_id), learned):
        served, reference = load_version(ws, record, inference=True), load_version(ws, record)
        assert isinstance(served.model, LlamaCppModel)
        got, expected = logits(served.model, served.tokenizer), logits(reference.model, reference.tokenizer)
        assert (got - expected).abs().max() < 2e-2 * expected.abs().max()  # f16 weights
    files = sorted((ws.cache_dir / "runtime").glob("*.gguf"))
    assert len(files) == 2  # one per version, reused: loading again writes nothing
    stamps = [f.stat().st_mtime_ns for f in files]
    load_version(ws, learned, inference=True)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_a_model_llama_cpp_cannot_run_falls_back_with_the_reason(tmp_path: Path, tiny_model_dir: Path,
                                                                 monkeypatch, capsys) -> None:
    import reverie.engines.llama_cpp_runtime as runtime

    def missing():
        raise ReverieError("running or quantizing a GGUF model needs llama.cpp")

    monkeypatch.setattr(runtime, "llama_cpp_module", missing)
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir, model={"runtime": "llama.cpp"}))
    record = ws.registry.get_model(ensure_release(ws))
    loaded = load_version(ws, record, inference=True)
    assert isinstance(loaded.model, torch.nn.Module)
    captured = capsys.readouterr()
    assert "cannot run on it" in captured.out + captured.err


def test_model_device_cuda_without_a_gpu_is_a_clear_error(tiny_model_dir: Path, monkeypatch) -> None:
    from reverie.config import ModelConfig
    from reverie.engines.models import load_pretrained, model_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ReverieError, match="model.device is cuda but torch sees no CUDA device"):
        load_pretrained(tiny_model_dir, ModelConfig(device="cuda"))
    assert model_device(ModelConfig(device="auto")) == torch.device("cpu")  # auto falls back to the CPU


def test_self_edits_are_written_through_the_runtime(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Dream's SEAL strategy and `seal write` only generate: they load the generator as the Gate does."""
    from peft import PeftModel

    from reverie.engines.inner_loop import generate_self_edits
    from reverie.generator import current_generator, load_writer

    for runtime, kind in (("llama.cpp", LlamaCppModel), ("transformers", torch.nn.Module)):
        ws = Workspace.open(make_workspace(tmp_path / runtime, tiny_model_dir, model={"runtime": runtime}))
        ensure_release(ws)
        writer = load_writer(ws, current_generator(ws))
        assert isinstance(writer.model, kind) and not isinstance(writer.model, PeftModel)
        [[edit]] = generate_self_edits(writer.model, writer.tokenizer, [("Velmora", "Velmora is an island.")],
                                       "implications", 1, 1.0, 16, 4, seed=0)
        assert isinstance(edit, list)
