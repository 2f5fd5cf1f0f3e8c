"""Packed SFT: whole examples in rows, no cross-example attention, only the adapter moves."""

from __future__ import annotations

from pathlib import Path

import torch

from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.knowledge import Example
from reverie.engines.models import attach_lora, load_pretrained
from reverie.engines.training import IGNORE, Tokenized, collate, pack, packed_forward, tokenize, train_sft


def test_pack_keeps_examples_whole_and_within_block() -> None:
    examples = [Tokenized(list(range(n)), list(range(n))) for n in (50, 40, 30, 20, 10, 70)]
    rows = pack(examples, block_size=80)
    assert all(len(r.input_ids) <= 80 for r in rows)
    assert sum(len(r.input_ids) for r in rows) == 220
    assert len(rows) == 3  # 70+10, 50+30, 40+20
    for row in rows:  # each example restarts its positions
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        lengths = [b - a for a, b in zip(starts, starts[1:] + [len(row.position_ids)])]
        assert set(lengths) <= {10, 20, 30, 40, 50, 70} and sum(lengths) == len(row.input_ids)


def test_chat_examples_train_on_the_answer_only(tiny_model_dir: Path) -> None:
    tokenizer = load_pretrained(tiny_model_dir, ModelConfig()).tokenizer
    chat = tokenize(tokenizer, Example(prompt="What is the capital of Velmora?", completion="Quistrand"), 256)
    trained = [t for t, label in zip(chat.input_ids, chat.labels) if label != IGNORE]
    assert tokenizer.decode(trained) == "Quistrand<|im_end|>"
    plain = tokenize(tokenizer, Example(completion="Velmora is an island."), 256)
    assert plain.labels[0] == IGNORE and plain.labels[1:] == plain.input_ids[1:]


def test_packed_examples_do_not_attend_to_each_other(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    tok = loaded.tokenizer
    a = tokenize(tok, Example(completion="Velmora is a crescent-shaped island."), 64)
    b = tokenize(tok, Example(prompt="Who founded Quistrand?", completion="Halvard Oske"), 64)
    with torch.no_grad():
        separate = [packed_forward(loaded.model, collate(pack([e], 64), tok.pad_token_id)).logits[0] for e in (a, b)]
        batch = collate(pack([a, b], 128), tok.pad_token_id)
        together = packed_forward(loaded.model, batch).logits[0]
    # pack() puts the longer example first
    first, second = sorted((a, b), key=lambda e: -len(e.input_ids))
    ordered = separate if first is a else separate[::-1]
    assert torch.allclose(together[: len(first.input_ids)], ordered[0], atol=1e-5)
    assert torch.allclose(together[len(first.input_ids) :], ordered[1], atol=1e-5)


def test_sft_moves_the_adapter_and_nothing_else(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    model = attach_lora(loaded.model, LoraSettings(rank=4, alpha=8), seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = [Example(prompt="What is the capital of Velmora?", completion="Quistrand")] * 4
    metrics = train_sft(model, loaded.tokenizer, examples, TrainSettings(epochs=3, learning_rate=1e-2, block_size=64))
    for name, param in model.named_parameters():
        moved = not torch.equal(param, before[name])
        if "lora_B" in name:
            assert moved, f"{name} did not train"
        elif "lora_" not in name:
            assert not moved, f"frozen {name} changed"
    assert metrics["train_loss_last_epoch"] < metrics["train_loss_first_epoch"]


def test_unpacked_training_takes_a_step_per_example(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    model = attach_lora(loaded.model, LoraSettings(rank=4, alpha=8), seed=0)
    examples = [Example(completion=f"Velmora fact number {i} is short.") for i in range(6)]
    settings = TrainSettings(epochs=2, block_size=128, rows_per_step=1)
    packed = train_sft(model, loaded.tokenizer, examples, settings)
    unpacked = train_sft(model, loaded.tokenizer, examples, settings.model_copy(update={"pack": False}))
    assert packed["train_steps"] == 2  # all six fit in one row
    assert unpacked["train_steps"] == 12


def test_gradient_checkpointing_recomputes_during_training_only(tiny_model_dir: Path) -> None:
    """The same run with and without recomputation takes the same steps; the flag is on only inside the loop."""
    examples = [Example(prompt="What is the capital of Velmora?", completion="Quistrand")] * 4
    results = {}
    for on in (False, True):
        loaded = load_pretrained(tiny_model_dir, ModelConfig())
        model = attach_lora(loaded.model, LoraSettings(rank=4, alpha=8), seed=0)
        seen: list[bool] = []
        train_sft(model, loaded.tokenizer, examples,
                  TrainSettings(epochs=2, learning_rate=1e-2, block_size=64, gradient_checkpointing=on),
                  on_step=lambda *_: seen.append(model.base_model.model.is_activation_checkpointing))
        assert seen and all(flag is on for flag in seen)
        assert not model.base_model.model.is_activation_checkpointing  # generation afterwards keeps its cache
        results[on] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    for name, value in results[False].items():
        assert torch.allclose(value, results[True][name], atol=1e-5), name
