"""A training job that every rank of a data-parallel launch runs: `python -m reverie.engines.train_job JOB_DIR`.

JOB_DIR holds job.json (a TrainJob) and examples.jsonl (reverie.data.knowledge.Example rows, as a Learn dataset
holds them). Every rank loads the model, attaches the adapter (or makes every weight trainable) and trains its
slice of each step (run_steps); the main rank alone writes the result, all at once: the adapter or the full
weights, with metrics.json. With checkpoint_every, a relaunch of the same JOB_DIR resumes where the last one
stopped and ends with the parameters an uninterrupted run ends with. `launch_job` starts it on N ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.jsonl import append_jsonl, read_jsonl, write_jsonl
from reverie.data.knowledge import Example
from reverie.engines.distributed import Processes, launch, start
from reverie.engines.models import attach_lora, load_pretrained
from reverie.engines.training import Checkpointing, train_sft
from reverie.errors import ReverieError
from reverie.progress import status_line
from reverie.validation import describe_errors

MODULE = "reverie.engines.train_job"
JOB_FILE = "job.json"
EXAMPLES_FILE = "examples.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
LOG_DIR = "logs"  # under JOB_DIR: every rank's stdout and stderr, one folder per launch
# Testing hooks. TRACE_ENV names a folder where each rank appends a line per step (the row indices it trained,
# the step's loss, a digest of its trainable parameters); FAIL_ENV makes every rank exit abruptly after that
# step, as a kill would leave the job.
TRACE_ENV = "REVERIE_TRAIN_TRACE"
FAIL_ENV = "REVERIE_FAIL_AFTER_STEP"
FAIL_EXIT = 75


class TrainJob(BaseModel):
    """job.json: what to train, how, and where the result goes. Relative paths are read from JOB_DIR."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path = Field(description="Hugging Face model directory with safetensors weights to start from.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Weights dtype (as model.dtype).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the model (as model.*).")
    mode: Literal["lora", "full"] = Field(description="lora: train an adapter; full: train every weight.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Shape of a fresh adapter (mode lora).")
    adapter: Path | None = Field(
        None, description="A PEFT adapter directory to keep training (mode lora); none: a fresh adapter from `lora`."
    )
    train: TrainSettings = Field(default_factory=TrainSettings,
                                 description="The schedule; rows_per_step is per rank.")
    output: Path = Field(description="Folder for the result; written once, whole, by the main rank.")
    checkpoint_every: int = Field(
        0, ge=0, description="Steps between checkpoints a relaunch resumes from (0: none; DDP or one process)."
    )
    description: str = Field("train", description="Label of the progress bar.")


def write_job(job_dir: Path, job: TrainJob, examples: list[Example]) -> None:
    """Lay out JOB_DIR for `launch_job`: job.json and examples.jsonl."""
    job_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(job_dir / EXAMPLES_FILE, (e.to_json() for e in examples))
    (job_dir / JOB_FILE).write_text(job.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _example(row: Any) -> Example:
    if not isinstance(row, dict) or not isinstance(row.get("completion"), str) or set(row) - {"prompt", "completion"}:
        raise ValueError("expected {\"prompt\": text or null, \"completion\": text}")
    if row.get("prompt") is not None and not isinstance(row["prompt"], str):
        raise ValueError("prompt must be text or null")
    return Example(completion=row["completion"], prompt=row.get("prompt"))


def read_job(job_dir: Path) -> tuple[TrainJob, list[Example]]:
    """job.json and the examples, checked; every problem of job.json is reported at once."""
    path = job_dir / JOB_FILE
    if not path.is_file():
        raise ReverieError(f"{path} does not exist: a training job directory holds {JOB_FILE} and {EXAMPLES_FILE}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        job = TrainJob.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise ReverieError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except ValidationError as exc:
        problems = describe_errors(exc, TrainJob)
        raise ReverieError(f"{path}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)) from None
    job = job.model_copy(update={
        "model_dir": job_dir / job.model_dir, "output": job_dir / job.output,
        "adapter": job_dir / job.adapter if job.adapter else None,
    })
    if job.adapter and job.mode != "lora":
        raise ReverieError(f"{path}: adapter is set but mode is {job.mode!r}; an adapter is trained in mode 'lora'")
    examples = read_jsonl(job_dir / EXAMPLES_FILE, _example) if (job_dir / EXAMPLES_FILE).is_file() else []
    if not examples:
        raise ReverieError(f"{job_dir / EXAMPLES_FILE} holds no examples to train on")
    return job, examples


def _trainable(model: PreTrainedModel, job: TrainJob) -> PreTrainedModel | PeftModel:
    if job.mode == "full":
        torch.manual_seed(job.train.seed)
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if job.adapter:
        return PeftModel.from_pretrained(model, job.adapter, is_trainable=True)
    return attach_lora(model, job.lora, job.train.seed)


def _run_key(job_dir: Path, world_size: int) -> str:
    """What a checkpoint must match to be resumed: the job, its examples and the number of ranks."""
    digest = hashlib.sha256(f"ranks={world_size}\n".encode())
    for name in (JOB_FILE, EXAMPLES_FILE):
        digest.update((job_dir / name).read_bytes())
    return digest.hexdigest()


def _param_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _step_hook(processes: Processes, model: torch.nn.Module,
               env: Mapping[str, str]) -> Callable[[int, list[int], float], None] | None:
    """The testing hooks (TRACE_ENV, FAIL_ENV) as run_steps' on_step; None when neither is set."""
    trace = Path(env[TRACE_ENV]) / f"rank{processes.rank}.jsonl" if env.get(TRACE_ENV) else None
    fail_after = int(env.get(FAIL_ENV) or 0)
    if trace is None and not fail_after:
        return None

    def on_step(step: int, rows: list[int], loss: float) -> None:
        if trace is not None:
            append_jsonl(trace, {"step": step, "rows": rows, "loss": loss, "params": _param_digest(model)},
                         durable=False)
        if step == fail_after:
            print(f"error: {FAIL_ENV}={fail_after}: stopping abruptly after step {step}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(FAIL_EXIT)

    return on_step


def _write_output(job: TrainJob, model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase,
                  state: dict[str, torch.Tensor], metrics: dict[str, float]) -> None:
    """Write the adapter or the full weights (with the tokenizer) and metrics.json, then move them into place
    at once, so the output folder is either absent or whole."""
    job.output.parent.mkdir(parents=True, exist_ok=True)
    staging = job.output.with_name(f".{job.output.name}.{uuid.uuid4().hex}")
    model.save_pretrained(staging, state_dict=state, safe_serialization=True)
    if job.mode == "full":
        tokenizer.save_pretrained(staging)
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(staging, job.output)


def run(job_dir: Path, env: Mapping[str, str] = os.environ) -> None:
    """What every rank runs: train this rank's share of the job; the main rank writes the result."""
    job, examples = read_job(job_dir)
    if (job.output / METRICS_FILE).is_file():
        status_line(f"{job.output} is already trained; nothing to do")
        return
    if job.output.exists():
        raise ReverieError(f"output {job.output} exists but holds no {METRICS_FILE}: not this job's result; "
                           "move it away or choose another output")
    processes = start(env)
    if job.checkpoint_every and processes.sharded:
        raise ReverieError(f"{job_dir / JOB_FILE}: checkpoint_every={job.checkpoint_every} but the launch shards the "
                           "model (FSDP or DeepSpeed); checkpoints are kept under DDP and in one process: set it to 0")
    loaded = load_pretrained(job.model_dir, ModelConfig(source=str(job.model_dir), dtype=job.dtype,
                                                        trust_remote_code=job.trust_remote_code))
    model = _trainable(loaded.model, job)
    checkpointing = (Checkpointing(job_dir / CHECKPOINT_FILE, job.checkpoint_every,
                                   _run_key(job_dir, processes.world_size)) if job.checkpoint_every else None)
    metrics = train_sft(model, loaded.tokenizer, examples, job.train, job.description, processes=processes,
                        checkpointing=checkpointing, on_step=_step_hook(processes, model, env))
    # every rank joins the gather; the prepared module is LossModule, whose one child is `model`
    state = {name.removeprefix("model."): tensor for name, tensor in processes.full_state_dict().items()}
    if processes.is_main:
        _write_output(job, model, loaded.tokenizer, state, metrics | {"train_processes": float(processes.world_size)})
        if checkpointing:
            checkpointing.path.unlink(missing_ok=True)
    processes.end()


def launch_job(job_dir: Path, processes: int, accelerate_config: Path | None = None) -> dict[str, float]:
    """Run the job in JOB_DIR on `processes` ranks (reverie.engines.distributed.launch) and return its metrics
    (train_sft's, plus train_processes). A relaunch after a failure resumes from the job's last checkpoint."""
    job, _ = read_job(job_dir)  # a bad job.json is reported here, not once per rank
    launch(MODULE, [str(job_dir)], processes, job_dir / LOG_DIR, accelerate_config)
    return json.loads((job.output / METRICS_FILE).read_text())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {MODULE} JOB_DIR", file=sys.stderr)
        return 2
    try:
        run(Path(args[0]))
    except ReverieError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
