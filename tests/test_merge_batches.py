"""Adapters that accumulate (learn.stack_adapters) and the batched merge that folds them into the weights: each
batch A/B-checked against the whole stack running unmerged, a failing batch keeping the last good state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml

from reverie.cycle import run_cycle
from reverie.engines.merging import stacked_model
from reverie.engines.models import attach_lora, load_pretrained, load_version, store_adapter, weights_dir
from reverie.engines.prompts import user_prompt_ids
from reverie.phases.outputs import CompressOutput, read_as
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

from conftest import make_workspace

PROMPT = "What does the river carry?"


def phase_models(ws: Workspace, cycle_id: str) -> dict[str, ModelRecord]:
    return {r.phase: ws.registry.get_model(r.outputs["model"]) for r in ws.registry.phase_runs(cycle_id)
            if r.phase in ("learn", "compress")}


def compress_output(ws: Workspace, cycle_id: str) -> CompressOutput:
    return read_as(next(r for r in ws.registry.phase_runs(cycle_id) if r.phase == "compress"), CompressOutput)


@torch.inference_mode()
def logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    return model(input_ids=torch.tensor([user_prompt_ids(tokenizer, PROMPT)])).logits.float()


def reconfigure(root: Path, **sections: dict) -> Workspace:
    config = yaml.safe_load((root / "reverie.yaml").read_text())
    for section, values in sections.items():
        config[section] = config.get(section, {}) | values
    (root / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Workspace.open(root)


def test_stacked_adapters_merge_in_batches_to_the_model_they_make(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"enabled": False}, serve={"retrieval": False},
                          learn={"stack_adapters": True}, compress={"strategies": []})
    ws = Workspace.open(root)
    first = run_cycle(ws)
    assert first.released  # the release keeps its adapter: nothing merged it
    a1 = ws.registry.get_model(ws.registry.get_alias()).adapter
    assert a1 is not None

    ws = reconfigure(root, compress={"strategies": ["merge"], "merge_batch": 1})
    second = run_cycle(ws).cycle_id
    models = phase_models(ws, second)
    learned, merged = models["learn"], models["compress"]
    # Learn trained a fresh adapter above the release's, which joined the stack beneath it
    assert learned.stack == [a1] and learned.adapter not in (None, a1)
    stacked = load_version(ws, learned)
    base = load_pretrained(weights_dir(ws, learned), ws.config.model)
    unmerged = stacked_model(base.model, [], [ws.artifacts.path(a) for a in (a1, learned.adapter)])
    assert torch.allclose(logits(stacked.model, stacked.tokenizer), logits(unmerged, base.tokenizer), atol=1e-4)

    # two adapters, batches of one: two checks, both passed, and the merged version carries no adapter
    outcome = compress_output(ws, second).strategies[0]
    metrics = next(r for r in ws.registry.phase_runs(second) if r.phase == "compress").metrics
    assert outcome.kept and "merged 2 of 2 adapters in batches of 1" in outcome.reason
    assert metrics["merged_adapters"] == 2 and {"batch1_max_logit_diff", "batch2_max_logit_diff"} <= set(metrics)
    assert merged.adapter is None and merged.stack == [] and merged.weights
    folded = load_version(ws, merged)
    assert torch.allclose(logits(folded.model, folded.tokenizer), logits(stacked.model, stacked.tokenizer),
                          atol=1e-3)


def test_a_failing_batch_keeps_the_last_good_state(tmp_path: Path, tiny_model_dir: Path) -> None:
    # In bfloat16 a merge rounds: folding an adapter whose delta is zero changes nothing (batch 1 passes), folding
    # one with a large delta moves the logits past a tight tolerance (batch 2 fails). The release carries both.
    root = make_workspace(tmp_path / "ws", tiny_model_dir, model={"dtype": "bfloat16"}, dream={"enabled": False},
                          serve={"retrieval": False}, learn={"stack_adapters": True},
                          compress={"strategies": ["merge"], "merge_batch": 1, "max_logit_diff": 1e-6})
    ws = Workspace.open(root)
    model = load_pretrained(tiny_model_dir, ws.config.model).model
    zero = store_adapter(ws, attach_lora(model, ws.config.learn.lora, seed=0))  # B starts at zero
    model = load_pretrained(tiny_model_dir, ws.config.model).model
    large = attach_lora(model, ws.config.learn.lora, seed=1)
    for name, parameter in large.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    large_hash = store_adapter(ws, large)
    release = ModelRecord(id="m-stacked", status="release", source=ws.config.model.source, adapter=large_hash,
                          stack=[zero], created_at=time.time())
    ws.registry.add_model(release)
    ws.registry.set_alias(release.id, "test")

    cycle_id = run_cycle(ws).cycle_id
    models = phase_models(ws, cycle_id)
    learned, kept = models["learn"], models["compress"]
    assert learned.stack == [zero, large_hash]
    outcome = compress_output(ws, cycle_id).strategies[0]
    assert outcome.kept and "merged 1 of 3 adapters" in outcome.reason
    assert "batch 2 failed" in outcome.reason and "last good state is kept" in outcome.reason
    # the last good state: the zero adapter in the weights, the other two still stacked on top, unmerged
    assert kept.stack == [large_hash] and kept.adapter == learned.adapter and kept.weights
    before, after = load_version(ws, learned), load_version(ws, kept)
    assert torch.equal(logits(before.model, before.tokenizer), logits(after.model, after.tokenizer))
