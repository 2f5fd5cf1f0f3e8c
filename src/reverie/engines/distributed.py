"""Data-parallel training across processes: accelerate's set-up behind a start-up guard, the rank helpers the
optimizer loop needs, and `launch`, which runs a job on several ranks as a subprocess.

A plain `torchrun` start gives DDP (gloo on CPU, NCCL on GPUs); `accelerate launch` with a config file picks DDP,
FSDP or DeepSpeed ZeRO instead, with no change to the code: the Accelerator reads the choice from the environment
the launcher sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from reverie.errors import ReverieError

T = TypeVar("T")
RENDEZVOUS_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun gives every rank
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def launched_world_size(env: Mapping[str, str] = os.environ) -> int:
    """How many processes the launcher says it started (WORLD_SIZE; 1 when run directly)."""
    try:
        return int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ReverieError(f"WORLD_SIZE={env['WORLD_SIZE']!r} in the environment is not a number") from None


def check_launch_env(env: Mapping[str, str] = os.environ) -> None:
    """Refuse a WORLD_SIZE>1 environment that no launcher set up, before anything waits on peers that never come."""
    world = launched_world_size(env)
    missing = [name for name in RENDEZVOUS_ENV if name not in env]
    if world > 1 and missing:
        raise ReverieError(
            f"WORLD_SIZE={world} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: start "
            "the job with torchrun --nproc_per_node N or accelerate launch, or unset WORLD_SIZE to run one process"
        )


def check_process_group(num_processes: int, env: Mapping[str, str] = os.environ) -> None:
    """Refuse to go on when the launcher started several processes but they did not form one group: each would
    train the whole data set alone and the ranks would overwrite each other's result."""
    world = launched_world_size(env)
    if world > 1 and num_processes != world:
        hint = "" if torch.cuda.is_available() else " On a machine without CUDA set ACCELERATE_USE_CPU=true (gloo)."
        raise ReverieError(
            f"{world} processes were launched (WORLD_SIZE={world}) but accelerate formed a group of "
            f"{num_processes}, so they would not share the work.{hint}"
        )


@dataclass
class Processes:
    """The ranks one training job runs on, as accelerate set them up; `prepare` wraps the module it trains."""

    accelerator: Accelerator
    prepared: torch.nn.Module | None = field(default=None, init=False)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def sharded(self) -> bool:
        """FSDP or DeepSpeed: parameters or optimizer state live in pieces across the ranks."""
        return self.accelerator.distributed_type in SHARDED

    def shard(self, batch: Sequence[T], per_rank: int) -> list[T]:
        """This rank's slice of a global batch: rank r takes items r*per_rank .. (r+1)*per_rank - 1."""
        return list(batch[self.rank * per_rank : (self.rank + 1) * per_rank])

    def sum(self, value: torch.Tensor | float) -> torch.Tensor:
        """The sum of `value` over all ranks, on every rank."""
        return self.accelerator.reduce(torch.as_tensor(value, dtype=torch.float32, device=self.device), "sum")

    def prepare(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                rows_per_rank: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Wrap the module and its optimizer for the configured strategy (DDP, FSDP, DeepSpeed). The learning-rate
        scheduler is left out on purpose: accelerate would step it once per rank per step."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is not None and plugin.is_auto("train_micro_batch_size_per_gpu"):
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = rows_per_rank  # no DataLoader to read it from
        self.prepared, optimizer = self.accelerator.prepare(module, optimizer)
        return self.prepared, optimizer

    def backward(self, loss: torch.Tensor) -> None:
        """Backward through the prepared module; DDP averages the gradients over the ranks as it goes."""
        self.accelerator.backward(loss)

    def clip_grad_norm(self, max_norm: float) -> None:
        """Clip the gradients of the whole job (FSDP and DeepSpeed clip their shards together)."""
        self.accelerator.clip_grad_norm_(self._module().parameters(), max_norm)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole state dict of the prepared module, gathered from the shards under FSDP or DeepSpeed. Every
        rank must call it; the main process gets the tensors."""
        return self.accelerator.get_state_dict(self._module())

    def _module(self) -> torch.nn.Module:
        if self.prepared is None:
            raise RuntimeError("prepare() comes first")
        return self.prepared

    def end(self) -> None:
        """Leave the process group once every rank is done (the main rank may still be writing the result)."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def start(env: Mapping[str, str] = os.environ) -> Processes:
    """Set up this process's place in the job, or refuse (ReverieError) when the launch did not form a group."""
    check_launch_env(env)
    accelerator = Accelerator()
    check_process_group(accelerator.num_processes, env)
    return Processes(accelerator)


def launch(module: str, args: Sequence[str], processes: int, log_dir: Path,
           accelerate_config: Path | None = None) -> None:
    """Run `python -m module args` on `processes` ranks: under torchrun (DDP) by default, or under
    `accelerate launch --config_file accelerate_config`, whose file picks DDP, FSDP or DeepSpeed on GPUs.

    Rank 0's output passes through; every rank's stdout and stderr are also kept under log_dir. Without CUDA the
    ranks run on CPU with gloo. Raises ReverieError naming the failing rank's log when the job fails.
    """
    if processes < 1:
        raise ReverieError(f"processes={processes}: a training job needs at least one process")
    run_dir = log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # accelerate forms no gloo group on CPU without it
    # torchrun's default is one thread per rank; share the cores out instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    if accelerate_config is None:
        launcher = ["torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                    "--local-ranks-filter", "0"]
    else:
        if not accelerate_config.is_file():
            raise ReverieError(f"accelerate config {accelerate_config} does not exist")
        launcher = ["accelerate.commands.launch", "--config_file", str(accelerate_config),
                    "--num_processes", str(processes), "--main_process_port", "0"]
    command = [sys.executable, "-m", *launcher, "--log_dir", str(run_dir), "--tee", "3", "-m", module, *args]
    returncode = subprocess.run(command, env=env, stdin=subprocess.DEVNULL).returncode
    if returncode != 0:
        raise ReverieError(_failure(module, returncode, run_dir))


def _failure(module: str, returncode: int, run_dir: Path) -> str:
    """Say which rank failed and why, from the logs torchrun kept (run_dir/<run id>/attempt_<n>/<rank>/stderr.log)."""
    for log in sorted(run_dir.glob("*/attempt_*/*/stderr.log"), key=lambda p: int(p.parent.name)):
        lines = log.read_text(errors="replace").strip().splitlines()
        if lines and any(line.startswith(("Traceback", "error:")) for line in lines):
            return f"{module} failed on rank {log.parent.name}: {lines[-1]} (log: {log})"
    return f"{module} failed (launcher exit status {returncode}); the ranks' logs are under {run_dir}"
