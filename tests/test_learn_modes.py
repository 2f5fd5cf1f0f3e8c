"""Learn's modes from reverie.yaml: an adapter (the default), every weight (learn.mode full), continued
pretraining on the pool's text (pretrain), in this process or on two (learn.processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reverie.cycle import run_cycle
from reverie.data.pool import ingest_path, pool_datasets
from reverie.engines.models import load_pretrained, load_version
from reverie.phases.outputs import LearnOutput, read_as
from reverie.workspace import Workspace

from conftest import make_workspace


def test_full_fine_tuning_trains_every_weight_and_stores_them(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny_model_dir, learn={"mode": "full"}, dream={"enabled": False},
                          serve={"retrieval": False})
    ws = Workspace.open(root)
    cycle_id = run_cycle(ws).cycle_id
    run = next(r for r in ws.registry.phase_runs(cycle_id) if r.phase == "learn")
    output = read_as(run, LearnOutput)
    learned = ws.registry.get_model(output.model)
    assert output.adapter is None and output.weights == learned.weights and learned.adapter is None
    assert run.metrics["train_steps"] > 0
    base = dict(load_pretrained(tiny_model_dir, ws.config.model).model.named_parameters())
    trained = dict(load_version(ws, learned).model.named_parameters())
    assert trained.keys() == base.keys()
    moved = [name for name, p in trained.items() if not torch.equal(p, base[name])]
    # every trained matrix moved (embeddings tied to the head, norms and projections alike)
    assert len(moved) == len(trained), sorted(set(trained) - set(moved))
    compress = next(r for r in ws.registry.phase_runs(cycle_id) if r.phase == "compress")
    assert compress.outputs["strategies"][0]["reason"] == "no adapter to merge"


def test_learn_on_two_processes_trains_as_one_with_the_doubled_batch(tmp_path: Path, tiny_model_dir: Path) -> None:
    # learn.processes 2 launches torchrun (gloo on this CPU); rows_per_step is per rank, so 2 ranks x 1 row train
    # as 1 process x 2 rows, the same steps from the same shuffled order
    common = {"dream": {"enabled": False}, "serve": {"retrieval": False}, "compress": {"strategies": []}}
    launched = make_workspace(tmp_path / "two", tiny_model_dir, learn={"processes": 2, "train": {"rows_per_step": 1}},
                              **common)
    single = make_workspace(tmp_path / "one", tiny_model_dir, learn={"train": {"rows_per_step": 2}}, **common)
    runs = {}
    for name, root in (("two", launched), ("one", single)):
        ws = Workspace.open(root)
        cycle_id = run_cycle(ws).cycle_id
        runs[name] = (ws, next(r for r in ws.registry.phase_runs(cycle_id) if r.phase == "learn"))
    (ws2, two), (ws1, one) = runs["two"], runs["one"]
    assert two.metrics["train_processes"] == 2 and two.metrics["train_steps"] == one.metrics["train_steps"]
    assert abs(two.metrics["train_loss_last_epoch"] - one.metrics["train_loss_last_epoch"]) < 1e-3
    assert not (ws2.cache_dir / f"learn-job-{two.cycle_id}").exists()  # the job folder goes once stored
    a = load_version(ws2, ws2.registry.get_model(two.outputs["model"])).model.merge_and_unload()
    b = load_version(ws1, ws1.registry.get_model(one.outputs["model"])).model.merge_and_unload()
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(x, y, atol=1e-4), name


CORPUS = [f"Note {i}: the lighthouse keeper counted {i * 7} ships passing the northern rocks that winter, and "
          f"wrote each name in the harbour ledger beside the weather of the day." for i in range(24)]


def pretrain_workspace(root: Path, model_dir: Path, **learn: object) -> Workspace:
    ws = Workspace.open(make_workspace(
        root, model_dir, learn={"mode": "pretrain", "pretrain_tokens": 400, "pretrain_buckets": ["general"],
                                "train": {"epochs": 2}, **learn},
        data={"sources": {"team": {"tier": 3, "licence": "internal"}}}, dream={"enabled": False},
        serve={"retrieval": False}))
    corpus = root.parent / f"{root.name}-corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    ingest_path(ws, corpus, "team", "general")
    return ws


def learned_weights(ws: Workspace, cycle_id: str) -> tuple[dict[str, torch.Tensor], dict[str, float], list[str]]:
    run = next(r for r in ws.registry.phase_runs(cycle_id) if r.phase == "learn" and r.status == "finished")
    record = ws.registry.get_model(read_as(run, LearnOutput).model)
    return dict(load_version(ws, record).model.named_parameters()), run.metrics, record.datasets


def test_continued_pretraining_streams_pool_text_and_resumes_mid_epoch(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reverie.phases.learn as learn

    whole = pretrain_workspace(tmp_path / "whole", tiny_model_dir)
    expected, metrics, lineage = learned_weights(whole, run_cycle(whole).cycle_id)
    # the budget was read from the pool in order, and the pool dataset joined the lineage
    assert metrics["pretrain_tokens"] == 400 and 0 < metrics["pretrain_records"] < len(CORPUS)
    assert [d.hash for d in pool_datasets(whole)][0] in lineage
    assert metrics["train_steps"] >= 6

    ws = pretrain_workspace(tmp_path / "killed", tiny_model_dir, checkpoint_every=2)
    plain = learn.train_sft

    def killed_after_step_5(*args, **kwargs):
        def stop(step, rows, loss):
            if step == 5:
                raise KeyboardInterrupt  # as a kill would leave it: after the checkpoint of step 4
        return plain(*args, **kwargs, on_step=stop)

    monkeypatch.setattr(learn, "train_sft", killed_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_cycle(ws)
    assert list(ws.cache_dir.glob("learn-*.pt"))  # the checkpoint of step 4
    taken: list[int] = []

    def recorded(*args, **kwargs):
        return plain(*args, **kwargs, on_step=lambda step, rows, loss: taken.append(step))

    monkeypatch.setattr(learn, "train_sft", recorded)
    resumed, resumed_metrics, _ = learned_weights(ws, run_cycle(ws, resume=True).cycle_id)
    assert taken[0] == 5 and taken[-1] == metrics["train_steps"]  # steps 1-4 came from the checkpoint
    assert resumed_metrics["train_steps"] == metrics["train_steps"]
    for name, value in expected.items():
        assert torch.allclose(value, resumed[name], atol=1e-6), name
    assert not list(ws.cache_dir.glob("learn-*.pt"))  # removed once the weights were stored
