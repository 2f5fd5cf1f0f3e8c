"""Distillation: the student moves towards the teacher's distributions, only its trainable weights move, and a
student with another vocabulary is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import build_tiny_model
from reverie.config import DistilSettings, LoraSettings, ModelConfig, TrainSettings
from reverie.data.knowledge import Example
from reverie.engines.distillation import distil, mean_kl
from reverie.engines.models import LoadedModel, attach_lora, load_pretrained
from reverie.engines.prompts import user_prompt_ids
from reverie.errors import ReverieError

EXAMPLES = [
    Example(prompt="What is the capital of Velmora?", completion="Quistrand is the capital of Velmora."),
    Example(prompt="Who founded Quistrand?", completion="Halvard Oske founded Quistrand."),
    Example(completion="Velmora is a crescent-shaped island in the northern sea."),
] * 2
SETTINGS = DistilSettings(temperature=2.0, train=TrainSettings(learning_rate=1e-2, epochs=3, block_size=64))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """Another seed of the tiny model: the same tokenizer, different weights."""
    return load_pretrained(build_tiny_model(tmp_path_factory.mktemp("teacher"), seed=1), ModelConfig())


def _fresh_model(model_dir: Path, seed: int, **overrides: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir, **overrides)).eval()


def test_mean_kl_is_the_kl_on_answer_tokens(tiny_model_dir: Path, teacher: LoadedModel) -> None:
    student = load_pretrained(tiny_model_dir, ModelConfig())
    tokenizer, temperature = student.tokenizer, 2.0
    chat, plain = EXAMPLES[0], EXAMPLES[2]
    prompt = user_prompt_ids(tokenizer, chat.prompt)
    answer = tokenizer(chat.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    text = [tokenizer.bos_token_id] + tokenizer(plain.completion, add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    total, tokens = 0.0, 0
    # The logits at position i predict token i + 1: the answer's tokens, and every plain text token after the first.
    for ids, first_scored in ((prompt + answer, len(prompt)), (text, 1)):
        with torch.no_grad():
            logits = [m(torch.tensor([ids])).logits[0, first_scored - 1 : -1] / temperature
                      for m in (teacher.model, student.model)]
        p_teacher, log_student = logits[0].softmax(-1), logits[1].log_softmax(-1)
        total += float((p_teacher * (p_teacher.log() - log_student)).sum())
        tokens += len(ids) - first_scored
    measured = mean_kl(student.model, teacher.model, tokenizer, [chat, plain], temperature)
    assert measured == pytest.approx(total / tokens, rel=1e-4)
    assert mean_kl(teacher.model, teacher.model, tokenizer, [chat, plain], temperature) == pytest.approx(0, abs=1e-6)


def test_distil_moves_a_full_student_towards_the_teacher(tiny_model_dir: Path, teacher: LoadedModel) -> None:
    student = load_pretrained(tiny_model_dir, ModelConfig())
    before = {n: p.detach().clone() for n, p in student.model.named_parameters()}
    report = distil(student.model, teacher.model, student.tokenizer, EXAMPLES, SETTINGS)
    assert report.kl_after < report.kl_before
    assert report.kl_after == pytest.approx(
        mean_kl(student.model, teacher.model, student.tokenizer, EXAMPLES, SETTINGS.temperature), rel=1e-5)
    assert len(report.losses) == report.steps > 0
    assert report.losses[0] == pytest.approx(report.kl_before, rel=1e-4)  # step one trains on the measured KL
    assert all(not torch.equal(p, before[n]) for n, p in student.model.named_parameters()), "a weight stayed put"


def test_a_lora_student_trains_only_its_adapter(tiny_model_dir: Path, teacher: LoadedModel) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    student = attach_lora(loaded.model, LoraSettings(rank=4, alpha=8), seed=0)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    teacher_before = {n: p.detach().clone() for n, p in teacher.model.named_parameters()}
    report = distil(student, teacher.model, loaded.tokenizer, EXAMPLES, SETTINGS)
    assert report.kl_after < report.kl_before
    for name, param in student.named_parameters():
        moved = not torch.equal(param, before[name])
        if "lora_B" in name:
            assert moved, f"{name} did not train"
        elif "lora_" not in name:
            assert not moved, f"frozen {name} changed"
    assert all(torch.equal(p, teacher_before[n]) for n, p in teacher.model.named_parameters()), "the teacher moved"


def test_a_smaller_student_moves_towards_the_teacher(tiny_model_dir: Path, teacher: LoadedModel) -> None:
    student = _fresh_model(tiny_model_dir, seed=2, num_hidden_layers=1)
    assert student.config.num_hidden_layers < teacher.model.config.num_hidden_layers
    report = distil(student, teacher.model, teacher.tokenizer, EXAMPLES, SETTINGS)
    assert report.kl_after < report.kl_before


def test_a_student_with_another_vocabulary_is_refused(tiny_model_dir: Path, teacher: LoadedModel) -> None:
    student = _fresh_model(tiny_model_dir, seed=3, vocab_size=len(teacher.tokenizer) + 64)
    with pytest.raises(ReverieError, match="compress.distil.student"):
        distil(student, teacher.model, teacher.tokenizer, EXAMPLES, SETTINGS)


def test_a_cycle_distils_a_user_supplied_smaller_student(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from conftest import make_workspace
    from reverie.cycle import run_cycle
    from reverie.data.pool import ingest_path
    from reverie.phases.outputs import CompressOutput, read_as
    from reverie.workspace import Workspace

    student_dir = tmp_path / "student"  # one layer where the release has two, the same tokenizer
    _fresh_model(tiny_model_dir, seed=2, num_hidden_layers=1).save_pretrained(student_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(student_dir)
    root = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"enabled": False}, serve={"retrieval": False},
                          learn={"pool_records": 3}, data={"sources": {"team": {"tier": 3, "licence": "internal"}}},
                          compress={"strategies": ["distil"],
                                    "distil": {"student": str(student_dir), "train": {"epochs": 2, "block_size": 64}},
                                    # a random tiny model knows nothing: only what distillation did is under test
                                    "keep": {"perplexity_tolerance": 100.0, "accuracy_tolerance": 1.0,
                                             "red_lines": {"knowledge": 1.0, "diversity": 1.0}}})
    ws = Workspace.open(root)
    general = tmp_path / "general.jsonl"  # the general rows Learn draws, which distillation trains on
    general.write_text("".join(json.dumps({"text": e.completion}) + "\n" for e in EXAMPLES[:3]))
    ingest_path(ws, general, "team", "general")
    cycle_id = run_cycle(ws).cycle_id
    run = next(r for r in ws.registry.phase_runs(cycle_id) if r.phase == "compress")
    [outcome] = read_as(run, CompressOutput).strategies
    variant = next(v for v in outcome.variants if v.name == "distilled-student")
    assert variant.reason and variant.cost["disk_bytes"] > 0
    assert run.metrics["distilled-student.kl_after"] < run.metrics["distilled-student.kl_before"]
