"""The reward model: it learns a planted preference, `reverie rm train` resumes after a kill, `rm eval` reports
accuracy with an interval beside the length-only rule, and a bad dataset name is a clear error."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from conftest import make_workspace
from reverie.cycle import ensure_release
from reverie.data.jsonl import jsonl_text
from reverie.data.preference import PAIRS_FILE, PreferencePair
from reverie.data.splits import preference_pairs
from reverie.errors import ReverieError
from reverie.registry import DatasetRecord, REWARD_ALIAS
from reverie.reward_models import evaluate_reward_model, pairwise_eval, read_report, train_reward_model
from reverie.workspace import Workspace

WORDS = ["capital", "island", "people", "river", "winter", "north", "city", "flag", "silver", "festival"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the tiny model is fastest on one thread of a shared CPU


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _filler(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def planted_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """The preferred answer ends "saffron heron", the other "silver tolvik" (as long); the rest of each is as
    long on average, so length explains nothing. Two sources, so the breakdown has rows."""
    rng = random.Random(seed)
    return [PreferencePair(prompt=f"Tell me about the {rng.choice(WORDS)} {i}.",
                           chosen=f"{_filler(rng, 1, 8)} saffron heron", rejected=f"{_filler(rng, 1, 8)} silver tolvik",
                           source="alpha" if i % 2 else "beta")
            for i in range(n)]


def longer_pairs(n: int, seed: int = 1) -> list[PreferencePair]:
    """The preferred answer is always the longer one: the length rule scores 1.0."""
    rng = random.Random(seed)
    return [PreferencePair(prompt=f"Describe the {rng.choice(WORDS)} {i}.", chosen=_filler(rng, 8, 12),
                           rejected=_filler(rng, 1, 3), source="long") for i in range(n)]


def add_dataset(root: Path, name: str, pairs: list[PreferencePair]) -> DatasetRecord:
    ws = Workspace.open(root)
    with ws.artifacts.stage() as staged:
        (staged.path / PAIRS_FILE).write_text(jsonl_text(p.model_dump() for p in pairs))
    record = DatasetRecord(staged.hash, name, len(pairs), "test", time.time(), kind="preference", cycle_id=None)
    ws.registry.add_dataset(record)
    return record


RM_SETTINGS = {"align": {"reward": {"lora": {"rank": 4, "alpha": 8}, "learning_rate": 5e-3, "epochs": 3,
                                    "batch_size": 4, "max_length": 128, "save_steps": 100}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Workspace, str]:
    """A workspace whose reward model learned the planted preference (trained once for the module)."""
    root = make_workspace(tmp_path_factory.mktemp("rm") / "ws", tiny_model_dir, **RM_SETTINGS)
    add_dataset(root, "preference/planted", planted_pairs(160))
    ws = Workspace.open(root, validate=True)
    ensure_release(ws)
    return ws, train_reward_model(ws, REWARD_ALIAS).id


def test_reward_model_learns_a_planted_preference(trained: tuple[Workspace, str]) -> None:
    ws, model_id = trained
    record = ws.registry.get_model(model_id)
    assert ws.registry.get_alias(REWARD_ALIAS) == model_id and record.status == "reward"
    assert record.parent_id == ws.registry.get_alias() and len(record.datasets) == 1
    result = evaluate_reward_model(ws, record)
    assert result.n == len(preference_pairs(planted_pairs(160), "held_out")) >= 20
    assert result.accuracy >= 0.8  # chance is 0.5
    assert result.ci95[0] > 0.5
    assert 0.25 < result.length_accuracy < 0.75  # length was made uninformative
    assert result.chosen_shorter.accuracy is not None and result.chosen_shorter.accuracy >= 0.7
    assert set(result.by_source) == {"alpha", "beta"}
    assert ws.registry.get_metrics(model_id, "rm-eval")["accuracy"] == pytest.approx(result.accuracy)
    card = (ws.cards_dir / f"{model_id}.md").read_text()
    assert "policy split" in card and "length-only rule" in card and f"{result.accuracy:.3f}" in card
    assert read_report(ws, model_id).evaluation == result


def test_judge_and_reward_model_on_the_same_split_are_refused(trained: tuple[Workspace, str]) -> None:
    ws, _ = trained
    with pytest.raises(ReverieError, match="trained on the policy split"):
        train_reward_model(ws, "judge", "policy")


def test_an_unknown_dataset_is_named_with_the_known_ones(trained: tuple[Workspace, str]) -> None:
    ws, _ = trained
    with pytest.raises(ReverieError, match=r"--dataset 'preference/nope' is not a registered.*preference/planted"):
        train_reward_model(ws, "judge", datasets=["preference/nope"])


def test_the_length_rule_and_agreement_are_scored_beside_the_model() -> None:
    pairs = longer_pairs(10)
    by_length = [float(len(p.chosen)) for p in pairs], [float(len(p.rejected)) for p in pairs]
    follows = pairwise_eval("m", pairs, *by_length)
    assert follows.length_accuracy == 1.0 and follows.accuracy == 1.0 and follows.agreement == 1.0
    assert follows.chosen_longer.n == 10 and follows.chosen_shorter.n == 0 and follows.chosen_shorter.accuracy is None
    against = pairwise_eval("m", pairs, *reversed(by_length))
    assert against.accuracy == 0.0 and against.agreement == 0.0 and against.length_accuracy == 1.0
    ties = pairwise_eval("m", pairs, [1.0] * 10, [1.0] * 10)
    assert ties.accuracy == 0.5 and ties.ci95 == (0.5, 0.5)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reverie", *args], capture_output=True, text=True, env=ONE_THREAD)


def _complete_steps(root: Path) -> list[int]:
    steps = []
    for state in root.glob(".reverie/rm/*/checkpoints/checkpoint-*/trainer_state.json"):
        try:
            steps.append(json.loads(state.read_text())["global_step"])
        except ValueError:  # being written
            pass
    return sorted(steps)


def test_rm_train_killed_mid_run_resumes_and_rm_eval_reports_the_length_rule(tmp_path: Path,
                                                                             tiny_model_dir: Path) -> None:
    settings = {"align": {"reward": {**RM_SETTINGS["align"]["reward"], "epochs": 8, "save_steps": 2}}}
    root = make_workspace(tmp_path / "ws", tiny_model_dir, **settings)
    add_dataset(root, "preference/long", longer_pairs(120))
    process = subprocess.Popen([sys.executable, "-m", "reverie", "rm", "train", "-w", str(root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    deadline = time.time() + 120
    while not _complete_steps(root) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.kill()
    _, stderr = process.communicate()
    assert process.returncode != 0, f"finished before it could be killed:\n{stderr}"
    resumable = _complete_steps(root)[-1]
    assert Workspace.open(root).registry.get_alias(REWARD_ALIAS) is None

    rerun = _cli("rm", "train", "-w", str(root))
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming the reward model from step {resumable} of" in rerun.stderr
    ws = Workspace.open(root)
    model_id = ws.registry.get_alias(REWARD_ALIAS)
    assert model_id is not None and f"resumed at step {resumable}" in rerun.stdout
    assert not list(root.glob(".reverie/rm/*"))  # checkpoints go once the model is registered

    shown = _cli("rm", "eval", "-w", str(root))
    assert shown.returncode == 0, shown.stderr
    assert "95% CI" in shown.stdout and "length rule" in shown.stdout and "source long" in shown.stdout
    metrics = ws.registry.get_metrics(model_id, "rm-eval")
    assert metrics["length_accuracy"] == 1.0 and 0.0 <= metrics["accuracy_low"] <= metrics["accuracy_high"] <= 1.0
    assert f"{metrics['accuracy']:.3f}" in shown.stdout


def test_rm_train_with_a_bad_dataset_name_exits_with_a_clear_error(workspace_dir: Path) -> None:
    add_dataset(workspace_dir, "preference/known", longer_pairs(4))
    result = _cli("rm", "train", "-w", str(workspace_dir), "--dataset", "preference/typo")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "preference/typo" in result.stderr and "preference/known" in result.stderr


def test_a_release_with_an_adapter_is_merged_before_the_head_goes_on(workspace_dir: Path, tmp_path: Path) -> None:
    from reverie.config import LoraSettings, ModelConfig
    from reverie.engines.models import attach_lora, load_pretrained, store_adapter
    from reverie.engines.reward_model import base_directory, load_classifier
    from reverie.registry import ModelRecord

    ws = Workspace.open(workspace_dir, validate=True)
    base = ws.registry.get_model(ensure_release(ws))
    tuned = attach_lora(load_pretrained(Path(base.source), ModelConfig()).model, LoraSettings(rank=2), seed=0)
    for name, parameter in tuned.named_parameters():
        if "lora_B" in name:
            torch.nn.init.constant_(parameter, 0.5)  # a trained adapter: merging it changes the weights
    release = ModelRecord(id="m-tuned", status="release", source=base.source, adapter=store_adapter(ws, tuned))
    merged = tuned.merge_and_unload().state_dict()
    classifier, _ = load_classifier(base_directory(ws, release, tmp_path / "merged"), ModelConfig())
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(classifier.state_dict()[weight], merged[weight])
    assert not torch.equal(merged[weight], load_pretrained(Path(base.source), ModelConfig()).model.state_dict()[weight])
