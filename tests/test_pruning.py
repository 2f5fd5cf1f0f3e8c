"""Pruning engine: Wanda sparsity that is measured, calibration-aware and shaped as asked; layer removal that
picks the idlest layer and leaves a model that saves, reloads and decodes with a KV cache."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from reverie.data.knowledge import Example, load_knowledge
from reverie.engines.pruning import calibration_batches, drop_layers, linear_sparsity, wanda_prune
from reverie.engines.prompts import user_prompt_ids
from reverie.errors import ReverieError


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    knowledge = load_knowledge("demo", Path("."))
    qa = [Example(prompt=q.question, completion=q.answer) for doc in knowledge.documents for q in doc.train_qa]
    return qa[:15] + [Example(completion=knowledge.documents[0].text)]


@pytest.fixture(scope="module")
def calibration(tokenizer, examples) -> list[torch.Tensor]:
    return calibration_batches(tokenizer, examples, rows=16, block_size=128)


@pytest.fixture
def model(tiny_model_dir: Path) -> LlamaForCausalLM:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def deep_model(tiny_model_dir: Path, layers: int) -> LlamaForCausalLM:
    """The tiny model's shape with more decoder layers, so that which layer goes is a real choice."""
    config = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config
    config.num_hidden_layers = layers
    torch.manual_seed(1)
    return LlamaForCausalLM(config).eval()


def decoder_linears(model) -> list[torch.nn.Linear]:
    return [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def logit_error(pruned, dense, calibration) -> float:
    """Mean squared logit difference to the dense model over the calibration rows."""
    errors = [float((pruned(input_ids=c).logits - dense(input_ids=c).logits).pow(2).mean()) for c in calibration]
    return sum(errors) / len(errors)


@torch.no_grad()
def prune_by(model, score, pattern: str) -> None:
    """Baseline pruning with the same shapes as Wanda but another score (magnitude, random)."""
    for m in decoder_linears(model):
        s = score(m)
        if pattern == "unstructured":
            m.weight.scatter_(1, s.topk(m.in_features // 2, dim=1, largest=False).indices, 0)
        else:
            lowest = s.view(m.out_features, -1, 4).topk(2, dim=2, largest=False).indices
            m.weight.view(m.out_features, -1, 4).scatter_(2, lowest, 0)


def test_calibration_rows_are_training_token_ids_with_the_chat_template(tokenizer, examples):
    rows = calibration_batches(tokenizer, examples, rows=3, block_size=128)
    assert len(rows) == 3
    assert all(r.dtype == torch.long and r.dim() == 2 and r.shape[0] == 1 for r in rows)
    prompt = user_prompt_ids(tokenizer, examples[0].prompt)
    assert rows[0][0, : len(prompt)].tolist() == prompt
    assert max(r.shape[1] for r in calibration_batches(tokenizer, examples, rows=16, block_size=8)) == 8


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_wanda_measured_sparsity_hits_the_target_in_every_row(model, calibration, sparsity):
    before = linear_sparsity(model)
    report = wanda_prune(model, calibration, sparsity, "unstructured")
    assert before < 0.01
    assert report.method == "wanda"
    assert abs(report.sparsity - sparsity) <= 0.01
    assert report.sparsity == linear_sparsity(model)
    for linear in decoder_linears(model):
        row_share = (linear.weight == 0).float().mean(dim=1)
        assert (row_share - sparsity).abs().max() <= 0.01
    assert report.parameters_after == report.parameters_before  # zeros are still stored
    assert "dense" in report.format_note


def test_two_four_zeroes_two_of_every_four_weights(model, calibration):
    report = wanda_prune(model, calibration, 0.5, "2:4")
    assert report.method == "2:4"
    assert abs(report.sparsity - 0.5) <= 0.01
    for linear in decoder_linears(model):
        zeros_per_group = (linear.weight == 0).view(linear.out_features, -1, 4).sum(dim=2)
        assert (zeros_per_group == 2).all()


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_wanda_beats_random_pruning_on_the_calibration_logits(model, calibration, pattern):
    # Against random choices at the same sparsity and shape, Wanda's error is 2-5x smaller on tiny models of
    # several seeds; a 0.75 margin leaves room for that spread.
    dense = copy.deepcopy(model)
    random_pruned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    prune_by(random_pruned, lambda m: torch.rand(m.weight.shape, generator=generator), pattern)
    wanda_prune(model, calibration, 0.5, pattern)
    assert logit_error(model, dense, calibration) < 0.75 * logit_error(random_pruned, dense, calibration)


def test_wanda_beats_magnitude_pruning_where_some_inputs_are_loud(model, calibration):
    # A random tiny model's input features are all about equally loud, so |W| alone is nearly Wanda's score and
    # either can win (measured over four seeds). Real LLMs have a few outlier features with large activations,
    # which is what the input norm is for: give each norm a few loud channels, and Wanda's error is 2-4x lower.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[[1, 6, 11, 16]] *= 10
            layer.post_attention_layernorm.weight[[1, 6, 11, 16]] *= 10
    dense = copy.deepcopy(model)
    magnitude_pruned = copy.deepcopy(model)
    prune_by(magnitude_pruned, lambda m: m.weight.abs(), "unstructured")
    wanda_prune(model, calibration, 0.5, "unstructured")
    assert logit_error(model, dense, calibration) < 0.75 * logit_error(magnitude_pruned, dense, calibration)


def test_pruning_refuses_a_model_with_an_adapter(model, calibration):
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ReverieError, match="adapter"):
        wanda_prune(peft_model, calibration, 0.5, "unstructured")
    with pytest.raises(ReverieError, match="adapter"):
        drop_layers(peft_model.base_model.model, calibration, 1)  # the base still holds the LoRA layers


def test_drop_layers_removes_the_identity_layer_first(tiny_model_dir, calibration):
    model = deep_model(tiny_model_dir, layers=4)
    identity = model.model.layers[1]
    with torch.no_grad():  # no attention or MLP output: the layer passes its input through unchanged
        identity.self_attn.o_proj.weight.zero_()
        identity.mlp.down_proj.weight.zero_()
    layer_size = sum(p.numel() for p in identity.parameters())
    report = drop_layers(model, calibration, 1)
    assert report.layers == (1,)
    assert all(layer is not identity for layer in model.model.layers)
    assert model.config.num_hidden_layers == len(model.model.layers) == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    assert report.parameters_after == report.parameters_before - layer_size
    assert "less compute" in report.format_note


def test_dropped_model_reloads_with_the_same_logits_and_decodes_with_a_cache(tiny_model_dir, calibration, tmp_path):
    model = deep_model(tiny_model_dir, layers=4)
    report = drop_layers(model, calibration, 2)
    assert len(report.layers) == 2
    model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert len(reloaded.model.layers) == 2
    prompt = calibration[0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=prompt).logits, model(input_ids=prompt).logits)
        greedy = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
        cached = reloaded.generate(prompt, use_cache=True, **greedy)
        uncached = reloaded.generate(prompt, use_cache=False, **greedy)
    assert cached.shape[1] == prompt.shape[1] + 8
    assert torch.equal(cached, uncached)


def test_drop_layers_keeps_layer_types_in_step(tiny_model_dir, calibration, tmp_path):
    # Qwen2 reads config.layer_types by position to pick each layer's attention mask.
    llama = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config
    config = Qwen2Config(
        vocab_size=llama.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, layer_types=["full_attention", "sliding_attention"] * 2, sliding_window=4,
        use_sliding_window=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    report = drop_layers(model, calibration, 1)
    expected = [t for i, t in enumerate(["full_attention", "sliding_attention"] * 2) if i not in report.layers]
    assert model.config.layer_types == expected
    model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.layer_types == expected
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=calibration[0]).logits, model(input_ids=calibration[0]).logits)


@pytest.mark.parametrize("count", [2, 3])
def test_drop_layers_refuses_to_remove_every_layer(model, calibration, count):
    with pytest.raises(ReverieError, match=r"compress\.prune\.drop_layers.*2 decoder layers"):
        drop_layers(model, calibration, count)
    assert len(model.model.layers) == 2
