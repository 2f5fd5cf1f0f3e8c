"""Pruning for Llama-family decoders: Wanda weight sparsity (unstructured or 2:4) and whole-layer removal.

Wanda (Sun et al. 2023) zeroes the weights whose |W| * ||X_j|| is smallest within each output row, X_j being
input feature j over the calibration tokens, so a small weight on a loud input survives. Layer removal follows
ShortGPT (Men et al. 2024): the layers whose output hidden state is most like their input do least, and go.
Only layer removal makes a dense safetensors file smaller or faster; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.knowledge import Example
from reverie.engines.training import tokenize
from reverie.errors import ReverieError

SparsityPattern = Literal["unstructured", "2:4"]

FORMAT_NOTES = {
    "wanda": "unstructured zeros are stored as dense weights: a dense safetensors file keeps its size and speed; "
    "only a sparse format or kernel turns them into savings",
    "2:4": "2:4 zeros are stored as dense weights: a dense safetensors file keeps its size and speed; only 2:4 "
    "sparse kernels (semi-structured sparse tensor cores) turn them into speed",
    "layers": "removed layers are gone from the saved model: fewer bytes and less compute per token in any format",
}


@dataclass(frozen=True)
class PruneReport:
    """What a pruning step did, measured on the pruned model (sparsity is counted, never the target copied)."""

    method: Literal["wanda", "2:4", "layers"]
    sparsity: float  # share of exact zeros over the decoder layers' linear weights, after pruning
    parameters_before: int
    parameters_after: int
    layers: tuple[int, ...]  # indices (in the model before pruning) of the decoder layers removed
    format_note: str


def calibration_batches(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], rows: int, block_size: int
) -> list[torch.Tensor]:
    """Token ids of the first `rows` examples, each a [1, T] tensor of at most block_size tokens; chat examples
    carry their chat template, as in training, so the activations are the ones the model sees when trained."""
    if not examples:
        raise ReverieError("pruning needs training examples to calibrate on, and there are none")
    if rows < 1:
        raise ReverieError(f"compress.prune.calibration_rows={rows}: must be at least 1")
    return [torch.tensor([tokenize(tokenizer, e, block_size).input_ids]) for e in examples[:rows]]


def linear_sparsity(model: PreTrainedModel) -> float:
    """Share of exact zeros over the weights of every nn.Linear inside the decoder layers."""
    weights = [m.weight for m in _decoder_layers(model).modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


@torch.no_grad()
def wanda_prune(
    model: PreTrainedModel, calibration: list[torch.Tensor], sparsity: float, pattern: SparsityPattern
) -> PruneReport:
    """Zero weights of every decoder linear layer in place by Wanda scores.

    unstructured: the lowest-scoring `sparsity` share of each output row; 2:4: the two lowest of every four
    consecutive input weights of each row (half the weights; `sparsity` is not read). The input norms come from
    one forward pass over the calibration rows on the dense model, not the paper's layer-by-layer pass that feeds
    each layer the output of the already-pruned ones: one pass costs a single forward per row, and the paper
    reports the two close.
    """
    _check_plain(model)
    if pattern == "unstructured" and not 0 < sparsity < 1:
        raise ReverieError(f"compress.prune.sparsity={sparsity}: must be between 0 and 1 (exclusive)")
    linears = {name: m for name, m in _decoder_layers(model).named_modules() if isinstance(m, nn.Linear)}
    if pattern == "2:4":
        uneven = [f"model.layers.{name} ({m.in_features})" for name, m in linears.items() if m.in_features % 4]
        if uneven:
            raise ReverieError(f"2:4 pruning needs input widths divisible by 4: {', '.join(uneven)} are not")
    before = _parameter_count(model)
    norms = _input_norms(model, calibration, list(linears.values()))
    for module in linears.values():
        score = module.weight.abs().float() * norms[module]
        if pattern == "unstructured":
            lowest = score.topk(round(module.in_features * sparsity), dim=1, largest=False).indices
            module.weight.scatter_(1, lowest, 0)
        else:
            groups = module.weight.view(module.out_features, -1, 4)
            lowest = score.view(module.out_features, -1, 4).topk(2, dim=2, largest=False).indices
            groups.scatter_(2, lowest, 0)
    method = "wanda" if pattern == "unstructured" else "2:4"
    return PruneReport(method, linear_sparsity(model), before, _parameter_count(model), (), FORMAT_NOTES[method])


@torch.no_grad()
def drop_layers(model: PreTrainedModel, calibration: list[torch.Tensor], count: int) -> PruneReport:
    """Remove the `count` decoder layers whose output is most like their input (ShortGPT's block influence), in
    place, and re-index what transformers reads so that save, reload and a KV cache see the smaller model.

    Similarity is the cosine between a layer's input and output hidden state, averaged over calibration tokens.
    Each layer's input and output are read by hooks on the layer rather than from output_hidden_states, whose last
    entry has the final norm applied and would misjudge the last layer.
    """
    _check_plain(model)
    layers = _decoder_layers(model)
    if not 1 <= count < len(layers):
        raise ReverieError(
            f"compress.prune.drop_layers={count}: the model has {len(layers)} decoder layers; allowed: 1 to "
            f"{len(layers) - 1} (at least one layer must remain)"
        )
    before = _parameter_count(model)
    similarity = _layer_similarity(model, calibration)
    removed = sorted(sorted(range(len(layers)), key=lambda i: similarity[i], reverse=True)[:count])
    kept = [i for i in range(len(layers)) if i not in removed]
    model.model.layers = nn.ModuleList(layers[i] for i in kept)
    for new_index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_index  # the KV cache slot this layer writes
    config = model.config
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in kept]
    config.num_hidden_layers = len(kept)
    return PruneReport(
        "layers", linear_sparsity(model), before, _parameter_count(model), tuple(removed), FORMAT_NOTES["layers"]
    )


def _check_plain(model: PreTrainedModel) -> None:
    """Pruning a model with an adapter attached would prune the base under the adapter; callers merge first."""
    if not isinstance(model, PreTrainedModel) or any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ReverieError(
            f"pruning needs a plain model with any adapter merged in, not {type(model).__name__} with adapter layers"
        )
    _decoder_layers(model)


def _decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ReverieError(
            f"pruning supports Llama-family decoders (model.model.layers); {type(model).__name__} has none"
        )
    return layers


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _calibration_pass(model: PreTrainedModel, calibration: list[torch.Tensor]) -> None:
    """Forward every calibration row in eval mode (no dropout), so that hooks see what inference sees."""
    if not calibration:
        raise ReverieError("pruning needs at least one calibration row, and none was given")
    was_training = model.training
    model.eval()
    try:
        for ids in calibration:
            model(input_ids=ids.to(model.device), use_cache=False)
    finally:
        model.train(was_training)


def _input_norms(
    model: PreTrainedModel, calibration: list[torch.Tensor], linears: list[nn.Linear]
) -> dict[nn.Module, torch.Tensor]:
    """L2 norm of each input feature of each linear layer over all calibration tokens."""
    squares = {m: torch.zeros(m.in_features, device=m.weight.device) for m in linears}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        squares[module] += inputs[0].detach().float().pow(2).reshape(-1, module.in_features).sum(0)

    hooks = [m.register_forward_hook(record) for m in linears]
    try:
        _calibration_pass(model, calibration)
    finally:
        for hook in hooks:
            hook.remove()
    return {m: s.sqrt() for m, s in squares.items()}


def _layer_similarity(model: PreTrainedModel, calibration: list[torch.Tensor]) -> list[float]:
    """Mean cosine similarity between each decoder layer's input and output hidden state, over all tokens."""
    layers = _decoder_layers(model)
    totals = [0.0] * len(layers)
    tokens = [0] * len(layers)

    def recorder(index: int):
        def record(_module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            totals[index] += float(cosine.sum())
            tokens[index] += cosine.numel()

        return record

    hooks = [layer.register_forward_hook(recorder(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        _calibration_pass(model, calibration)
    finally:
        for hook in hooks:
            hook.remove()
    return [total / count for total, count in zip(totals, tokens)]
