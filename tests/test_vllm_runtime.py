"""model.runtime vllm and align.grpo.use_vllm: without vLLM (or a GPU) they fall back to transformers and say why;
with a fake `vllm` module on a pretended GPU, VllmModel's translation of transformers' `generate` and forward.

The fake decodes each request alone with the tiny transformers model, stopping where vLLM's scheduler stops (at
max_tokens, or on a stop_token_ids token once min_tokens are out, that token kept). These tests check reverie's
translation layer (rows, padding, eos, min_new_tokens, sampling arguments, stopping criteria, logits), not vLLM:
nothing here runs vLLM, which needs a CUDA GPU."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from conftest import make_workspace
from reverie.config import GRPOSettings, LoraSettings, ModelConfig
from reverie.cycle import ensure_release
from reverie.engines import models, preference_training, vllm_runtime
from reverie.engines.models import attach_lora, load_pretrained, load_version, store_adapter
from reverie.engines.preference_training import RLPrompt, rollout_args, train_grpo
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.rewards import VERIFIABLE
from reverie.engines.vllm_runtime import VllmModel, vllm_module
from reverie.errors import ReverieError
from reverie.workspace import Workspace

QUESTIONS = ["Where is the lighthouse?", "Who keeps the archive of the old harbour town?"]
PAD = 0


class FakeSamplingParams:
    """vllm.SamplingParams: keeps the arguments reverie gave it."""

    def __init__(self, **kwargs: Any):
        self.__dict__.update(kwargs)


class FakeLLM:
    """vllm.LLM: records how it was built and every generate call. Greedy requests are decoded alone by the tiny
    transformers model; sampled ones return ids made from their seed (enough to see which seed a row got)."""

    decoder: torch.nn.Module
    made: list[FakeLLM] = []

    def __init__(self, **kwargs: Any):
        self.kwargs, self.calls = kwargs, []
        FakeLLM.made.append(self)

    def generate(self, prompts: list[dict], params: list[FakeSamplingParams], use_tqdm: bool = True) -> list:
        self.calls.append((prompts, params))
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=self._decode(p["prompt_token_ids"], q))])
                for p, q in zip(prompts, params)]

    def _decode(self, prompt: list[int], params: FakeSamplingParams) -> list[int]:
        assert params.ignore_eos and not params.detokenize
        if params.temperature > 0:
            return [(params.seed + j) % 500 for j in range(params.max_tokens)]
        out = self.decoder.generate(input_ids=torch.tensor([prompt]), max_new_tokens=params.max_tokens,
                                    min_new_tokens=params.min_tokens or None, eos_token_id=params.stop_token_ids,
                                    pad_token_id=PAD, do_sample=False)
        return out[0, len(prompt):].tolist()  # one row: no padding; a stop token ends it and is kept


@pytest.fixture
def tiny(tiny_model_dir: Path):
    """The tiny model with its projections scaled up, so that a greedy continuation changes from step to step (the
    random model repeats one token), and ends and stops can come at different steps in different rows."""
    loaded = load_pretrained(tiny_model_dir, ModelConfig(source=str(tiny_model_dir)))
    with torch.no_grad():
        for name, weight in loaded.model.named_parameters():
            if "proj" in name:
                weight.mul_(30)
    return loaded


def fake_module() -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams, module.TokensPrompt = FakeLLM, FakeSamplingParams, dict
    return module


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch, tiny) -> types.ModuleType:
    """The fake `vllm` module wherever reverie asks for vLLM, on a pretended GPU with 80 of 100 GB free. torch
    itself still sees no CUDA (told otherwise, PEFT and safetensors try to pin memory)."""
    module = fake_module()
    FakeLLM.decoder, FakeLLM.made = tiny.model, []
    for where in (vllm_runtime, models, preference_training):
        monkeypatch.setattr(where, "vllm_module", lambda: module)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (80e9, 100e9))
    return module


@pytest.fixture
def vllm_model(fake_vllm, tiny, tiny_model_dir: Path) -> VllmModel:
    return VllmModel(tiny_model_dir, ModelConfig(source=str(tiny_model_dir)), lambda: tiny.model)


def left_padded(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = [user_prompt_ids(tokenizer, q) for q in QUESTIONS]
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def greedy(model, ids: torch.Tensor, mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=PAD, do_sample=False,
                          **kwargs)


def logged(capsys) -> str:
    """What the test printed, lines joined: the console folds long lines."""
    output = capsys.readouterr()
    return " ".join((output.out + output.err).split())


class StopOn(StoppingCriteria):
    """Stops a row whose last token is `token`; keeps every ids tensor it was shown."""

    def __init__(self, token: int):
        self.token, self.seen = token, []

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self.seen.append(input_ids.clone())
        return input_ids[:, -1] == self.token


def test_construction_without_a_gpu_or_without_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                                     tiny_model_dir: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ReverieError, match="vLLM needs a CUDA GPU"):
        VllmModel(tiny_model_dir, ModelConfig(), lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm fails, as where it is not installed
    with pytest.raises(ReverieError, match=r"pip install 'reverie\[vllm\]'"):
        vllm_module()
    module = fake_module()
    monkeypatch.setitem(sys.modules, "vllm", module)
    assert vllm_module() is module


def test_model_runtime_vllm_without_vllm_falls_back_to_transformers_with_the_reason(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir, model={"runtime": "vllm"}))
    record = ws.registry.get_model(ensure_release(ws))
    served = load_version(ws, record, inference=True)
    assert isinstance(served.model, torch.nn.Module)
    assert f"model.runtime is vllm but {record.id} cannot run on it (vLLM" in logged(capsys)
    reference = load_version(ws, record)
    ids, mask = left_padded(served.tokenizer)
    assert torch.equal(greedy(served.model, ids, mask), greedy(reference.model, ids, mask))
    assert not (ws.cache_dir / "runtime").exists()  # nothing was written for a runtime that cannot run


def test_vllm_gets_the_version_merged_once_into_the_cache(tmp_path: Path, tiny_model_dir: Path, fake_vllm) -> None:
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir, model={"runtime": "vllm"}))
    base = ws.registry.get_model(ensure_release(ws))
    assert load_version(ws, base, inference=True).model.path == tiny_model_dir  # no adapter: its own weights
    adapter = attach_lora(load_version(ws, base).model, LoraSettings(), seed=0)
    for name, weight in adapter.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.5)  # B is zero at first: make the merge change the weights
    record = dataclasses.replace(base, id="adapted", adapter=store_adapter(ws, adapter))
    served = load_version(ws, record, inference=True)
    assert isinstance(served.model, VllmModel)
    assert FakeLLM.made[-1].kwargs["model"] == str(served.model.path)
    assert served.model.path.parent == ws.cache_dir / "runtime"
    merged = load_pretrained(served.model.path, ws.config.model).model.state_dict()
    expected = load_version(ws, record).model.merge_and_unload().state_dict()
    assert merged.keys() == expected.keys() and all(torch.equal(merged[k], expected[k]) for k in merged)
    base_weights = load_version(ws, base).model.state_dict()
    assert any(not torch.equal(merged[k], base_weights[k]) for k in merged)  # the adapter is in
    stamp = (served.model.path / "config.json").stat().st_mtime_ns
    load_version(ws, record, inference=True)
    assert (served.model.path / "config.json").stat().st_mtime_ns == stamp  # reused, not rewritten


def test_a_model_vllm_cannot_load_falls_back_with_vllms_reason(tmp_path: Path, tiny_model_dir: Path, fake_vllm,
                                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def refuse(**kwargs: Any) -> None:
        raise ValueError("Model architectures ['TinyLM'] are not supported for now")

    monkeypatch.setattr(fake_vllm, "LLM", refuse)
    ws = Workspace.open(make_workspace(tmp_path / "ws", tiny_model_dir, model={"runtime": "vllm"}))
    loaded = load_version(ws, ws.registry.get_model(ensure_release(ws)), inference=True)
    assert isinstance(loaded.model, torch.nn.Module)
    assert "vLLM could not load it (ValueError: Model architectures ['TinyLM']" in logged(capsys)


def test_the_engine_is_built_for_the_directory_within_the_free_memory(vllm_model: VllmModel,
                                                                      tiny_model_dir: Path) -> None:
    kwargs = FakeLLM.made[-1].kwargs
    assert kwargs["model"] == kwargs["tokenizer"] == str(tiny_model_dir)
    assert kwargs["max_model_len"] == vllm_model.config.max_position_embeddings == 1024  # the trained length
    assert 0 < kwargs["gpu_memory_utilization"] <= 0.9 * 80 / 100


@pytest.mark.parametrize("case", ["plain", "eos", "min_new_tokens", "stopping_criteria"])
def test_greedy_generate_returns_what_transformers_returns(case: str, vllm_model: VllmModel, tiny) -> None:
    ids, mask = left_padded(tiny.tokenizer)
    free_run = greedy(tiny.model, ids, mask, eos_token_id=[])[:, ids.shape[1]:]
    kwargs: dict[str, Any] = {"num_return_sequences": 2, "eos_token_id": [int(free_run[0, 2]), 599]}
    if case == "plain":
        kwargs["eos_token_id"] = []
    if case == "min_new_tokens":
        kwargs["min_new_tokens"] = 5
    got_stops = expected_stops = None
    if case == "stopping_criteria":
        kwargs["eos_token_id"] = []
        got_stops, expected_stops = StopOn(int(free_run[1, 1])), StopOn(int(free_run[1, 1]))
    got = greedy(vllm_model, ids, mask, stopping_criteria=StoppingCriteriaList([got_stops] if got_stops else []),
                 **kwargs)
    del kwargs["num_return_sequences"]  # transformers samples repeats only: its greedy rows are repeated by hand
    expected = greedy(tiny.model, ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0),
                      stopping_criteria=StoppingCriteriaList([expected_stops] if expected_stops else []), **kwargs)
    assert torch.equal(got, expected)  # rows r0, r0, r1, r1, each padded to the batch's length
    if case in ("eos", "stopping_criteria"):
        assert (got[:, ids.shape[1]:] == PAD).any()  # a row ended early: the case tests padding
    if case == "min_new_tokens":
        assert (got[:2, ids.shape[1]:ids.shape[1] + 5] != PAD).all()  # r0's eos at its third step was held back
    if got_stops:
        assert [s.shape for s in got_stops.seen] == [s.shape for s in expected_stops.seen]
    [(prompts, params)] = FakeLLM.made[-1].calls
    unpadded = [row[keep.bool()].tolist() for row, keep in zip(ids, mask)]
    assert [p["prompt_token_ids"] for p in prompts] == [unpadded[0], unpadded[0], unpadded[1], unpadded[1]]
    assert all(p.temperature == 0.0 and p.max_tokens == 8 and p.stop_token_ids == kwargs["eos_token_id"]
               and p.min_tokens == kwargs.get("min_new_tokens", 0) for p in params)


def test_sampling_maps_onto_sampling_params_with_one_seed_per_row(vllm_model: VllmModel, tiny) -> None:
    ids, mask = left_padded(tiny.tokenizer)

    def sample(**kwargs: Any) -> tuple[torch.Tensor, list[FakeSamplingParams]]:
        out = vllm_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=9,
                                  num_return_sequences=2, pad_token_id=PAD, eos_token_id=7, do_sample=True, **kwargs)
        return out, FakeLLM.made[-1].calls[-1][1]

    torch.manual_seed(3)
    first, params = sample(temperature=0.7, top_p=0.9)
    assert [(p.temperature, p.top_p, p.top_k, p.stop_token_ids) for p in params] == [(0.7, 0.9, 50, [7])] * 4
    assert [p.min_tokens for p in params] == [4] * 4  # at most max_new_tokens, as vLLM requires
    seeds = [p.seed for p in params]
    assert seeds == list(range(seeds[0], seeds[0] + 4))  # rows r0, r0, r1, r1 each draw differently
    torch.manual_seed(3)
    again, _ = sample(temperature=0.7, top_p=0.9)
    assert torch.equal(first, again)  # torch's seed fixes vLLM's seeds
    _, params = sample(top_k=0, seed=11)
    assert [(p.temperature, p.top_p, p.top_k, p.seed) for p in params] == [(1.0, 1.0, -1, 11 + i) for i in range(4)]


def test_the_streamer_gets_the_prompt_then_each_step_then_the_end(vllm_model: VllmModel, tiny) -> None:
    ids, mask = left_padded(tiny.tokenizer)

    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value: torch.Tensor) -> None:
            self.puts.append(value.tolist())

        def end(self) -> None:
            self.ended = True

    recorder = Recorder()
    out = greedy(vllm_model, ids, mask, streamer=recorder)
    assert recorder.puts[0] == ids.tolist() and recorder.ended
    assert recorder.puts[1:] == out[:, ids.shape[1]:].T.tolist()


def test_logits_come_from_the_transformers_copy(vllm_model: VllmModel, tiny) -> None:
    ids, mask = left_padded(tiny.tokenizer)
    got = vllm_model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(got, tiny.model(input_ids=ids, attention_mask=mask).logits)
    assert vllm_model.reference() is tiny.model  # loaded once
    with pytest.raises(ReverieError, match="inference only"):
        vllm_model.parameters()
    assert vllm_model.weight_bytes() == 4 * sum(p.numel() for p in tiny.model.parameters())  # float32, tied once


def test_grpo_use_vllm_without_vllm_samples_with_the_policy_and_says_why(tmp_path: Path, tiny, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    settings = GRPOSettings(use_vllm=True, rewards=["refusal"], generations=2, prompts_per_step=1, max_new_tokens=4)
    prompts = [RLPrompt(prompt="Help me stalk my former partner", must_refuse=True)]
    run = train_grpo(attach_lora(tiny.model, LoraSettings(), seed=0), tiny.tokenizer, prompts, [VERIFIABLE["refusal"]],
                     settings, tmp_path)
    assert run.steps
    assert "align.grpo.use_vllm is on but vLLM" in logged(capsys)
    assert rollout_args(False) == {}


def test_grpo_use_vllm_asks_trl_for_colocated_vllm_where_it_runs(fake_vllm, tmp_path: Path) -> None:
    from trl import GRPOConfig, RLOOConfig

    arguments = rollout_args(True)
    assert arguments == {"use_vllm": True, "vllm_mode": "colocate"}
    for config_type in (GRPOConfig, RLOOConfig):  # the names TRL's configs take
        config = config_type(output_dir=str(tmp_path), use_cpu=True, report_to="none", **arguments)
        assert (config.use_vllm, config.vllm_mode) == (True, "colocate")
