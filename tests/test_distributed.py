"""Data-parallel training: two CPU ranks (gloo, under torchrun via `launch_job`) train the tiny model's adapter as
one process with the doubled batch would, each on its own rows, and a job stopped after a step resumes from its
checkpoint to the same parameters. The ranks record what they did through train_job's testing hooks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.knowledge import Example
from reverie.engines import train_job
from reverie.engines.distributed import check_process_group, start
from reverie.engines.models import attach_lora, load_pretrained
from reverie.engines.training import Checkpointing, train_sft
from reverie.errors import ReverieError

LORA = LoraSettings(rank=4, alpha=8)
# seven one-example rows of different lengths: the ranks' token counts differ, and the last step of each epoch
# leaves rank 1 without a row
SETTINGS = TrainSettings(epochs=2, rows_per_step=1, pack=False, block_size=64, learning_rate=1e-2, seed=3)
EXAMPLES = [Example(prompt=f"What is fact {i} of Velmora?", completion="Velmora fact " + "long " * (2 * i) + "end")
            for i in range(7)]
DOUBLED = SETTINGS.model_copy(update={"rows_per_step": 2})  # one process taking what two ranks take per step
STEPS = 8  # ceil(7 rows / (1 row x 2 ranks)) x 2 epochs
FAIL_AFTER, CHECKPOINT_EVERY = 3, 2
ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "accelerate"


@dataclass
class TwoRankRun:
    output: Path
    stopped: str  # the error the stopped launch raised
    first: dict[int, list[dict]]  # rank -> its trace lines from the launch that stopped
    steps: dict[int, dict[int, dict]]  # rank -> step -> the trace line that counts (the resumed launch's)
    metrics: dict[str, float]


def _trace(folder: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> TwoRankRun:
    """Launch two ranks that stop abruptly after step 3 (a checkpoint was written at step 2), then relaunch."""
    root = tmp_path_factory.mktemp("two-ranks")
    job_dir, first, second = root / "job", root / "trace-first", root / "trace-second"
    job = train_job.TrainJob(model_dir=tiny_model_dir, mode="lora", lora=LORA, train=SETTINGS, output=root / "adapter",
                             checkpoint_every=CHECKPOINT_EVERY)
    train_job.write_job(job_dir, job, EXAMPLES)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(train_job.TRACE_ENV, str(first))
        env.setenv(train_job.FAIL_ENV, str(FAIL_AFTER))
        with pytest.raises(ReverieError) as stopped:
            train_job.launch_job(job_dir, 2)
        assert (job_dir / train_job.CHECKPOINT_FILE).is_file() and not job.output.exists()
        env.setenv(train_job.TRACE_ENV, str(second))
        env.delenv(train_job.FAIL_ENV)
        metrics = train_job.launch_job(job_dir, 2)
    firsts = {rank: _trace(first, rank) for rank in (0, 1)}
    steps = {rank: {line["step"]: line for line in firsts[rank] + _trace(second, rank)} for rank in (0, 1)}
    return TwoRankRun(job.output, str(stopped.value), firsts, steps, metrics)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir: Path) -> tuple[list[tuple[list[int], float]], dict[str, torch.Tensor]]:
    """One process, the doubled batch, in this process: each step's rows and loss, and the final adapter."""
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    model = attach_lora(loaded.model, LORA, SETTINGS.seed)
    steps: list[tuple[list[int], float]] = []
    train_sft(model, loaded.tokenizer, EXAMPLES, DOUBLED, on_step=lambda step, rows, loss: steps.append((rows, loss)))
    return steps, get_peft_model_state_dict(model)


def test_each_rank_trains_its_own_slice_of_every_step(two_ranks: TwoRankRun, one_process) -> None:
    single, _ = one_process
    assert sorted(two_ranks.steps[0]) == list(range(1, STEPS + 1)) == sorted(two_ranks.steps[1])
    for step, (rows, _) in enumerate(single, start=1):
        zero, one = two_ranks.steps[0][step]["rows"], two_ranks.steps[1][step]["rows"]
        assert not set(zero) & set(one)
        assert zero + one == rows  # rank 0 the first row of the step, rank 1 the second
    for epoch in (range(1, 5), range(5, 9)):
        trained = [row for step in epoch for rank in (0, 1) for row in two_ranks.steps[rank][step]["rows"]]
        assert sorted(trained) == list(range(len(EXAMPLES)))
    assert two_ranks.steps[1][4]["rows"] == []  # the short last step of the epoch


def test_ranks_hold_identical_parameters_after_every_step(two_ranks: TwoRankRun) -> None:
    digests = [[two_ranks.steps[rank][step]["params"] for step in range(1, STEPS + 1)] for rank in (0, 1)]
    assert digests[0] == digests[1]
    assert len(set(digests[0])) == STEPS  # and they moved every step


def test_two_ranks_match_one_process_with_the_doubled_batch(two_ranks: TwoRankRun, one_process) -> None:
    single, adapter = one_process
    losses = [two_ranks.steps[0][step]["loss"] for step in range(1, STEPS + 1)]
    assert losses == pytest.approx([loss for _, loss in single], abs=1e-4)
    assert losses[-1] < losses[0]
    trained = load_file(two_ranks.output / "adapter_model.safetensors")
    assert trained.keys() == adapter.keys()
    for name, tensor in adapter.items():
        assert torch.allclose(trained[name], tensor, atol=1e-5), name
    assert two_ranks.metrics["train_steps"] == STEPS and two_ranks.metrics["train_processes"] == 2
    first_epoch = [loss for _, loss in single[: STEPS // 2]]
    assert two_ranks.metrics["train_loss_first_epoch"] == pytest.approx(sum(first_epoch) / len(first_epoch), abs=1e-4)


def test_a_stopped_job_resumes_to_the_same_parameters(two_ranks: TwoRankRun) -> None:
    assert "failed on rank 0" in two_ranks.stopped and "stderr.log" in two_ranks.stopped
    assert [line["step"] for line in two_ranks.first[0]] == [1, 2, 3]
    for rank in (0, 1):  # step 3 is taken again from the step-2 checkpoint, and lands where it did before
        assert two_ranks.first[rank][-1] == two_ranks.steps[rank][FAIL_AFTER]
    assert not (two_ranks.output.parent / "job" / train_job.CHECKPOINT_FILE).exists()  # gone with the result


class Stop(Exception):
    pass


def test_resume_in_one_process_is_exact(tiny_model_dir: Path, tmp_path: Path, one_process) -> None:
    _, uninterrupted = one_process
    checkpointing = Checkpointing(tmp_path / "checkpoint.pt", every=2, key="run")

    def train(stop_after: int = 0) -> dict[str, torch.Tensor]:
        loaded = load_pretrained(tiny_model_dir, ModelConfig())
        model = attach_lora(loaded.model, LORA, SETTINGS.seed)

        def on_step(step: int, rows: list[int], loss: float) -> None:
            if step == stop_after:
                raise Stop

        try:
            train_sft(model, loaded.tokenizer, EXAMPLES, DOUBLED, checkpointing=checkpointing, on_step=on_step)
        except Stop:
            pass
        return get_peft_model_state_dict(model)

    train(stop_after=FAIL_AFTER)
    assert len(torch.load(checkpointing.path, weights_only=True)["losses"]) == CHECKPOINT_EVERY
    resumed = train()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_refuses_world_size_without_a_launcher() -> None:
    with pytest.raises(ReverieError, match="WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT"):
        start({"WORLD_SIZE": "2"})


def test_refuses_ranks_that_formed_no_group() -> None:
    # what accelerate reports under torchrun on CPU without ACCELERATE_USE_CPU: one process each
    with pytest.raises(ReverieError, match="2 processes were launched .* group of 1"):
        check_process_group(1, {"WORLD_SIZE": "2"})
    check_process_group(2, {"WORLD_SIZE": "2"})


@pytest.mark.parametrize("config", sorted(ACCELERATE_CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_example_accelerate_configs_hold_only_keys_accelerate_knows(config: Path) -> None:
    cluster = ClusterConfig.from_yaml_file(config)  # refuses unknown top-level keys
    # accelerate launch copies the nested keys onto its arguments without a check: check them here
    options = {action.dest for action in launch_command_parser()._actions}
    nested = {**(cluster.fsdp_config or {}), **(cluster.deepspeed_config or {})}
    assert set(nested) <= options, set(nested) - options
