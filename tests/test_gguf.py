"""GGUF export and quantization, and the llama.cpp runtime behind transformers' generate / forward."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import gguf
import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList,
                          TextIteratorStreamer)

from reverie.engines.gguf_export import gguf_file_type, quantize_gguf, write_gguf
from reverie.errors import ReverieError

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="needs the llama extra: pip install 'reverie[llama]'")
THREADS = 1  # other test runs share the cores; llama.cpp's spinning threads crawl when oversubscribed


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model with its matrices redrawn at std 0.3: the stock init's greedy output is one token over and
    over, so a comparison of greedy decodes could not fail; these logits change from token to token."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    out = tmp_path_factory.mktemp("sharp")
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def hf_model(sharp_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(sharp_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(sharp_model_dir: Path):
    return AutoTokenizer.from_pretrained(sharp_model_dir)


@pytest.fixture(scope="module")
def f32_gguf(sharp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(sharp_model_dir, tmp_path_factory.mktemp("gguf") / "model-f32.gguf")


@pytest.fixture(scope="module")
def llama_model(f32_gguf: Path):
    from reverie.engines.llama_cpp_runtime import LlamaCppModel

    return LlamaCppModel(f32_gguf, n_threads=THREADS)


@pytest.fixture(scope="module")
def batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Two chat prompts of different lengths, left-padded as engines/generation.py pads them."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             return_dict=True)["input_ids"]
               for q in ("Which river runs through the old town?", "Hi")]
    width, pad = max(map(len, prompts)), tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def _logits(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def _greedy(tokenizer, **overrides) -> dict:
    return {"max_new_tokens": 16, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "do_sample": False} | overrides


def test_f32_gguf_loads_back_in_transformers_with_equal_logits(sharp_model_dir, hf_model, f32_gguf, batch):
    back = AutoModelForCausalLM.from_pretrained(f32_gguf.parent, gguf_file=f32_gguf.name, dtype=torch.float32)
    ids, _ = batch
    assert (_logits(back.eval(), ids) - _logits(hf_model, ids)).abs().max() < 1e-4


def test_f16_gguf_keeps_norms_f32_and_stays_close(sharp_model_dir, hf_model, f32_gguf, batch, tmp_path):
    f16 = write_gguf(sharp_model_dir, tmp_path / "model-f16.gguf", dtype="f16")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(f16).tensors}
    assert {types[n] for n in types if "norm" in n} == {gguf.GGMLQuantizationType.F32}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert "output.weight" not in types  # the tiny model ties its embeddings
    assert gguf_file_type(f16) == "f16" and gguf_file_type(f32_gguf) == "f32"
    assert f16.stat().st_size < f32_gguf.stat().st_size
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f16.name, dtype=torch.float32).eval()
    ids, _ = batch
    reference = _logits(hf_model, ids)
    assert (_logits(back, ids) - reference).abs().max() < 1e-2 * reference.abs().max()


def test_non_llama_config_is_refused(sharp_model_dir, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ReverieError, match="model_type 'gpt2'.*supported: llama"):
        write_gguf(tmp_path, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp"))


def test_missing_llama_cpp_names_the_extra(f32_gguf, monkeypatch, tmp_path):
    from reverie.engines.llama_cpp_runtime import LlamaCppModel

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    with pytest.raises(ReverieError, match=r"needs llama.cpp: pip install 'reverie\[llama\]'"):
        LlamaCppModel(f32_gguf)
    with pytest.raises(ReverieError, match=r"reverie\[llama\]"):
        quantize_gguf(f32_gguf, tmp_path / "q.gguf", "q8_0")


@needs_llama
def test_llama_cpp_logits_match_transformers_left_and_right_padded(hf_model, llama_model, batch):
    """Within 1e-4 (measured about 1e-5 on logits up to 8): an F32 file runs with an F32 KV cache."""
    ids, mask = batch
    for ids, mask in ((ids, mask), (ids.flip(1), mask.flip(1))):  # flipping turns left padding into right
        reference, got = _logits(hf_model, ids, mask), _logits(llama_model, ids, mask)
        assert got.shape == reference.shape and got.dtype == torch.float32
        real = mask.bool()
        assert (got[real] - reference[real]).abs().max() < 1e-4
        assert not got[~real].any()


@needs_llama
def test_greedy_generate_matches_transformers_token_for_token(hf_model, llama_model, tokenizer, batch):
    ids, mask = batch
    expected = hf_model.generate(input_ids=ids, attention_mask=mask, **_greedy(tokenizer))
    got = llama_model.generate(input_ids=ids, attention_mask=mask, **_greedy(tokenizer))
    assert got.dtype == torch.long and got.shape == expected.shape
    assert torch.equal(got, expected)
    assert len(set(expected[0, ids.shape[1]:].tolist())) > 3  # a decode that varies, so the match means something


@needs_llama
def test_rows_that_end_early_are_padded_as_transformers_pads_them(hf_model, llama_model, tokenizer, batch):
    ids, mask = batch
    free = hf_model.generate(input_ids=ids, attention_mask=mask, **_greedy(tokenizer))
    stop = int(free[0, ids.shape[1] + 3])  # row 0's fourth new token ends it
    kwargs = _greedy(tokenizer, eos_token_id=stop)
    expected = hf_model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    got = llama_model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(got, expected)
    assert (got[0, ids.shape[1] + 4:] == tokenizer.pad_token_id).all()


@needs_llama
def test_min_new_tokens_decodes_past_end_of_sequence(hf_model, llama_model, tokenizer, batch):
    ids, mask = batch
    ids, mask = ids[:1], mask[:1]
    stop = int(hf_model.generate(input_ids=ids, attention_mask=mask, **_greedy(tokenizer))[0, ids.shape[1]])
    kwargs = _greedy(tokenizer, eos_token_id=stop)  # the very first greedy token is the end of sequence
    assert llama_model.generate(input_ids=ids, attention_mask=mask, **kwargs).shape[1] == ids.shape[1] + 1
    forced = llama_model.generate(input_ids=ids, attention_mask=mask, min_new_tokens=10, **kwargs)
    assert forced.shape[1] >= ids.shape[1] + 10
    assert stop not in forced[0, ids.shape[1] : ids.shape[1] + 10].tolist()
    assert torch.equal(forced, hf_model.generate(input_ids=ids, attention_mask=mask, min_new_tokens=10, **kwargs))


@needs_llama
def test_sampling_repeats_with_a_seed(llama_model, tokenizer, batch):
    ids, mask = batch
    kwargs = _greedy(tokenizer, do_sample=True, temperature=1.0, top_k=0, num_return_sequences=2)
    first = llama_model.generate(input_ids=ids, attention_mask=mask, seed=7, **kwargs)
    assert first.shape[0] == 4 and torch.equal(first[0, : ids.shape[1]], first[1, : ids.shape[1]])
    assert torch.equal(first, llama_model.generate(input_ids=ids, attention_mask=mask, seed=7, **kwargs))
    assert not torch.equal(first, llama_model.generate(input_ids=ids, attention_mask=mask, seed=8, **kwargs))
    runs = []
    for _ in range(2):  # without a seed keyword, torch's generator decides, as for transformers
        torch.manual_seed(3)
        runs.append(llama_model.generate(input_ids=ids, attention_mask=mask, **kwargs))
    assert torch.equal(*runs)


@needs_llama
def test_streamer_sees_the_new_text(llama_model, tokenizer, batch):
    ids, mask = batch
    one = ids[:1]
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = llama_model.generate(input_ids=one, streamer=streamer, **_greedy(tokenizer))
    assert "".join(streamer) == tokenizer.decode(out[0, one.shape[1]:], skip_special_tokens=True) != ""


@needs_llama
def test_stopping_criteria_end_a_row(llama_model, tokenizer, batch):
    class AfterThree(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= width + 3, dtype=torch.bool)

    ids, mask = batch
    width = ids.shape[1]
    stopping = StoppingCriteriaList([AfterThree()])
    out = llama_model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=stopping, **_greedy(tokenizer))
    assert out.shape == (2, width + 3)


@needs_llama
def test_quantized_files_are_smaller_and_stay_close(tiny_model_dir, batch, tmp_path):
    """On the stock tiny model (initialised at a trained model's scale; the sharp one amplifies any error)."""
    from reverie.engines.llama_cpp_runtime import LlamaCppModel

    f32 = write_gguf(tiny_model_dir, tmp_path / "model-f32.gguf")
    full = LlamaCppModel(f32, n_threads=THREADS)
    ids, mask = batch
    reference = _logits(full, ids, mask)[mask.bool()]
    errors = {}
    for fmt in ("q8_0", "q4_0", "q4_k_m"):
        quantized = quantize_gguf(f32, tmp_path / f"model-{fmt}.gguf", fmt)
        assert gguf_file_type(quantized) == fmt
        assert quantized.stat().st_size < f32.stat().st_size
        model = LlamaCppModel(quantized, n_threads=THREADS)
        assert model.weight_bytes() < full.weight_bytes()
        errors[fmt] = float((_logits(model, ids, mask)[mask.bool()] - reference).abs().max() / reference.abs().max())
    assert errors["q8_0"] < errors["q4_0"] < 0.25, errors  # measured about 0.013 and 0.10
    assert not list(tmp_path.glob(".*tmp"))


@needs_llama
def test_inference_only_surface(llama_model, hf_model, tokenizer):
    assert llama_model.eval() is llama_model and llama_model.device.type == "cpu"
    assert llama_model.config.vocab_size == hf_model.config.vocab_size
    assert llama_model.config.num_hidden_layers == hf_model.config.num_hidden_layers
    assert llama_model.config.eos_token_id == tokenizer.eos_token_id
    with pytest.raises(ReverieError, match="inference only"):
        llama_model.parameters()
