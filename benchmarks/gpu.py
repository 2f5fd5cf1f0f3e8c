"""reverie on one GPU, in bf16, in at most about ten minutes:

1. peak: the GPU's bf16 matrix-multiply rate, measured (square matmuls of 4096, 8192 and 16384; the best);
2. learn-lora, learn-full: reverie.engines.training.train_sft on the embedded SmolLM2-135M-Instruct, a LoRA
   adapter and every weight, on the demo Learn mix repeated to fill --rows-per-step rows of --block-size tokens
   a step, about --steps steps after a warm-up epoch: answer tokens/s (train_sft's figure), tokens/s over every token
   of the packed rows, and MFU = 6 x parameters x tokens/s / the measured peak (also over --datasheet-tflops
   when given). Weights are bf16 as reverie loads them with model.dtype bfloat16 (no autocast, no float32
   master copy). LoRA skips the weight gradients of the frozen model (about 4 x parameters FLOPs a token), so
   6N overstates its useful work; attention FLOPs are left out of both;
3. transformers, vllm, vllm-runtime: generation tokens/s at batch 1, 8 and 64 and time to first token
   (benchmarks/generation.py's measurement) under transformers on CUDA, under vLLM's own API when it imports, and
   under reverie.engines.vllm_runtime.VllmModel (what model.runtime vllm gives the Gate, Dream and the server,
   through transformers' generate), with greedy-token agreement with transformers;
4. distributed: where torch.cuda.device_count() > 1, a full fine-tuning job on every GPU under DDP (torchrun)
   and FSDP (examples/accelerate/fsdp.yaml) through reverie.engines.train_job.launch_job; skipped on one GPU.

    python benchmarks/gpu.py [--model embedded|DIR|FILE.gguf] [--steps 30] [--rows-per-step 16]
        [--block-size 1024] [--datasheet-tflops 989] [--out benchmarks/results/gpu]

Needs CUDA torch, transformers, peft and accelerate; vLLM is optional (its two stages skipped with the reason),
TRL and llama.cpp are not used. Without a CUDA device it says so and exits 0. The model runs in one process: train_sft
is given a one-process accelerate group (reverie.engines.distributed.start), whose path moves each batch to the
GPU. Every stage's figures go to <out>.partial.json as it finishes; a rerun skips finished stages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from results_io import run_stages, write_results

if TYPE_CHECKING:
    from reverie.config import TrainSettings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MATMUL_SIZES = (4096, 8192, 16384)
MATMUL_WORK = 2e13  # FLOPs timed per size, so that each takes tens of milliseconds on a data-centre GPU
DISTRIBUTED_STEPS = 3  # a job's launch dwarfs its steps; a few show the per-step rate
GENERATE_TOKENS = 64
GENERATE_PROMPTS = 8
GENERATE_BATCHES = (1, 8, 64)
REPEATS = 3
LEARNING_RATES = {"lora": 1e-3, "full": 1e-5}
STAGES = ("peak", "learn-lora", "learn-full", "transformers", "vllm", "vllm-runtime", "distributed")
NEEDS = {"learn-lora": "peak", "learn-full": "peak", "distributed": "peak", "vllm": "transformers",
         "vllm-runtime": "transformers"}
GENERATION_BACKENDS = ("transformers", "vllm", "vllm-runtime")


def peak_bf16() -> dict:
    """The best bf16 matmul rate over a few square sizes, in TFLOPS."""
    import torch

    rates = {}
    for n in MATMUL_SIZES:
        a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        for _ in range(3):
            a @ b
        iterations = max(5, int(MATMUL_WORK / (2 * n**3)))
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            a @ b
        torch.cuda.synchronize()
        rates[str(n)] = 2 * n**3 * iterations / (time.perf_counter() - start) / 1e12
        del a, b
    torch.cuda.empty_cache()
    return {"tflops": max(rates.values()), "tflops_by_size": rates}


def training_examples(tokenizer, rows_per_step: int, block_size: int, steps: int) -> tuple[list, TrainSettings, int]:
    """The demo Learn mix repeated until one epoch fills about one step of `rows_per_step` rows of block_size tokens
    (rows_per_step counts every rank's), the settings that make about `steps` steps of it, and the tokens of all the
    packed rows the run computes on, padding aside."""
    import math

    from reverie.config import TrainSettings
    from reverie.data.knowledge import learn_examples, load_knowledge
    from reverie.engines.training import IGNORE, pack, tokenize

    base = learn_examples(load_knowledge("demo", REPO))
    usable = [t for t in (tokenize(tokenizer, e, block_size) for e in base) if any(x != IGNORE for x in t.labels)]
    copies = max(1, int(0.95 * rows_per_step * block_size / sum(len(t.input_ids) for t in usable)))
    rows = pack(usable * copies, block_size)  # as train_sft packs them
    epochs = max(1, round(steps / math.ceil(len(rows) / rows_per_step)))
    settings = TrainSettings(epochs=epochs, rows_per_step=rows_per_step, block_size=block_size)
    return base * copies, settings, epochs * sum(len(r.input_ids) for r in rows)


def utilisation(tokens_per_s: float, parameters: int, peak_tflops: float, datasheet: float | None, gpus: int) -> dict:
    flops = 6 * parameters * tokens_per_s
    return {"mfu": flops / (peak_tflops * 1e12 * gpus)} | (
        {"mfu_datasheet": flops / (datasheet * 1e12 * gpus)} if datasheet else {})


def learn(mode: str, directory: Path, args: argparse.Namespace, peak_tflops: float) -> dict:
    """train_sft in bf16 on the GPU: a warm-up run, then the measured one."""
    import torch

    from reverie.config import LoraSettings, ModelConfig
    from reverie.engines.distributed import start
    from reverie.engines.models import attach_lora, load_pretrained
    from reverie.engines.training import train_sft

    loaded = load_pretrained(directory, ModelConfig(source=str(directory), dtype="bfloat16"))
    parameters = parameter_count(directory)
    model = attach_lora(loaded.model, LoraSettings(), seed=0) if mode == "lora" else loaded.model.requires_grad_(True)
    model.to("cuda")
    examples, settings, tokens = training_examples(loaded.tokenizer, args.rows_per_step, args.block_size, args.steps)
    settings = settings.model_copy(update={"learning_rate": LEARNING_RATES[mode]})
    processes = start()  # one process: run_steps' accelerate path, which puts each batch on the GPU
    train_sft(model, loaded.tokenizer, examples, settings.model_copy(update={"epochs": 1}), f"{mode}: warm-up",
              processes=processes)
    torch.cuda.reset_peak_memory_stats()
    metrics = train_sft(model, loaded.tokenizer, examples, settings, f"{mode}: bf16 on {processes.device}",
                        processes=processes)
    tokens_per_s = tokens / metrics["train_seconds"]
    figures = metrics | {
        "parameters": parameters, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tokens_per_s": tokens_per_s, "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
    } | utilisation(tokens_per_s, parameters, peak_tflops, args.datasheet_tflops, 1)
    processes.accelerator.free_memory()  # drops accelerate's references to the prepared model and optimizer
    del model, loaded
    torch.cuda.empty_cache()
    return figures


def generate(backend: str, directory: Path, result: dict, data: Path) -> dict:
    """Generation under one backend, bf16 on the GPU (benchmarks/generation.py's stage; vLLM's agreement and
    ratios are against the transformers stage)."""
    from generation import backend_stage

    figures = backend_stage(backend, directory, result, generation_prompts(directory, data), GENERATE_TOKENS,
                            GENERATE_BATCHES, REPEATS, "bfloat16", "cuda")
    release_gpu()
    return figures


def generation_prompts(directory: Path, data: Path) -> list[list[int]]:
    from generation import questions
    from reverie.config import ModelConfig
    from reverie.engines.models import load_tokenizer
    from reverie.engines.prompts import user_prompt_ids

    tokenizer = load_tokenizer(directory, ModelConfig(source=str(directory)))
    return [user_prompt_ids(tokenizer, q) for q in questions(data, GENERATE_PROMPTS)]


def release_gpu() -> None:
    """Give a stage's memory back before the next one: its runtime is garbage now."""
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def vllm_runtime(directory: Path, result: dict, data: Path) -> dict:
    """reverie's VllmModel through transformers' generate (benchmarks/generation.py's TransformersStyle), bf16:
    the vllm stage's engine plus reverie's translation (row order, padding, per-row SamplingParams). Agreement is
    positional only: its logits come from a transformers copy, so a teacher-forced figure would be transformers'."""
    from generation import TransformersStyle, measure, ratios
    from reverie.config import ModelConfig
    from reverie.engines.models import load_pretrained, load_tokenizer
    from reverie.engines.vllm_runtime import VllmModel
    from reverie.errors import ReverieError

    config = ModelConfig(source=str(directory), dtype="bfloat16", device="cuda")
    start = time.perf_counter()
    try:
        model = VllmModel(directory, config, lambda: load_pretrained(directory, config).model)
    except ReverieError as exc:
        print(f"vllm-runtime: skipped: {exc}")
        return {"skipped": str(exc)}
    figures = {"load_seconds": time.perf_counter() - start}
    prompts = generation_prompts(directory, data)
    speed, continuations = measure(TransformersStyle(model, load_tokenizer(directory, config)), prompts,
                                   GENERATE_TOKENS, GENERATE_BATCHES, REPEATS)
    same = [a == b for ours, theirs in zip(continuations, result["transformers"]["continuations"])
            for a, b in zip(ours, theirs)]
    figures |= speed | {"agreement_positional": sum(same) / len(same)}
    del model
    release_gpu()
    return figures | ratios(figures, result["transformers"])


def parameter_count(directory: Path) -> int:
    """Parameters of the model in `directory`, counted on the meta device (nothing is loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))
    return sum(p.numel() for p in model.parameters())


def distributed(directory: Path, args: argparse.Namespace, peak_tflops: float) -> dict:
    """Full fine-tuning on every GPU of the machine, under DDP and under FSDP, through reverie's training job."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        print(f"distributed: {gpus} GPU here, skipped (it needs more than one)")
        return {"skipped": f"torch.cuda.device_count() is {gpus}; DDP and FSDP need more than one GPU"}
    from reverie.config import ModelConfig
    from reverie.engines.models import load_tokenizer
    from reverie.engines.train_job import TrainJob, launch_job, write_job
    from reverie.errors import ReverieError

    tokenizer = load_tokenizer(directory, ModelConfig(source=str(directory)))
    examples, settings, tokens = training_examples(tokenizer, gpus * args.rows_per_step, args.block_size,
                                                   DISTRIBUTED_STEPS)
    settings = settings.model_copy(update={"rows_per_step": args.rows_per_step,  # per rank in a job
                                           "learning_rate": LEARNING_RATES["full"]})
    parameters = parameter_count(directory)
    figures: dict = {"gpus": gpus, "parameters": parameters}
    for strategy, config in (("ddp", None), ("fsdp", REPO / "examples" / "accelerate" / "fsdp.yaml")):
        job_dir = HERE / ".cache" / "gpu" / strategy
        shutil.rmtree(job_dir, ignore_errors=True)
        job = TrainJob(model_dir=directory.resolve(), dtype="bfloat16", mode="full", train=settings,
                       output=job_dir / "out", description=f"full, {strategy} on {gpus} GPUs")
        write_job(job_dir, job, examples)
        start = time.perf_counter()
        try:
            metrics = launch_job(job_dir, gpus, config)
        except ReverieError as exc:
            figures[strategy] = {"failed": str(exc)}
            continue
        tokens_per_s = tokens / metrics["train_seconds"]
        figures[strategy] = (metrics | {"launch_seconds": time.perf_counter() - start, "tokens_per_s": tokens_per_s}
                             | utilisation(tokens_per_s, parameters, peak_tflops, args.datasheet_tflops, gpus))
        shutil.rmtree(job_dir / "out", ignore_errors=True)
    return figures


def markdown(result: dict) -> str:
    s = result["settings"]
    peak = result.get("peak", {})
    lines = [f"# reverie on {s['gpu']} ({result['machine']})", "",
             f"Measured bf16 matmul peak: {peak.get('tflops', float('nan')):.0f} TFLOPS "
             f"({', '.join(f'{n}: {t:.0f}' for n, t in peak.get('tflops_by_size', {}).items())})"
             + (f"; datasheet {s['datasheet_tflops']:.0f} TFLOPS." if s["datasheet_tflops"] else "."), "",
             "| Learn (train_sft, bf16) | parameters | trainable | steps | answer tok/s | tok/s | "
             "MFU (measured peak) | MFU (datasheet) | peak memory GB | loss first → last |", "|" + "---|" * 10]
    for mode in ("lora", "full"):
        if (f := result.get(f"learn-{mode}")) is None:
            continue
        datasheet = f"{f['mfu_datasheet']:.1%}" if "mfu_datasheet" in f else "-"
        lines.append(f"| {mode} | {f['parameters'] / 1e6:.1f}M | {f['trainable'] / 1e6:.2f}M | "
                     f"{f['train_steps']:.0f} | {f['train_tokens_per_s']:.0f} | {f['tokens_per_s']:.0f} | "
                     f"{f['mfu']:.1%} | {datasheet} | {f['peak_memory_gb']:.1f} | "
                     f"{f['train_loss_first_epoch']:.3f} → {f['train_loss_last_epoch']:.3f} |")
    lines += ["", f"About {s['steps']} measured steps of {s['rows_per_step']} packed rows x {s['block_size']} tokens, "
              "after a warm-up epoch; tok/s counts every token of the packed rows, answer tok/s the tokens "
              "with a loss. MFU = 6 x parameters x tok/s / peak (LoRA does about 4N a token, so its figure is high).",
              "", "| generation (bf16, CUDA) | load s | TTFT ms | "
              + " | ".join(f"tok/s b{b}" for b in GENERATE_BATCHES) + " | agreement positional | teacher-forced |",
              "|" + "---|" * (5 + len(GENERATE_BATCHES))]
    skipped = []
    for backend in GENERATION_BACKENDS:
        if (f := result.get(backend)) is None:
            continue
        if "skipped" in f:
            skipped.append(f"- {backend} generation: {f['skipped']}")
            continue
        speeds = " | ".join(f"{f[f'tokens_per_s_b{b}']:.0f}" for b in GENERATE_BATCHES)
        forced = f"{f['agreement_teacher_forced']:.3f}" if "agreement_teacher_forced" in f else "-"
        lines.append(f"| {backend} | {f['load_seconds']:.1f} | {f['ttft_ms']:.1f} | {speeds} | "
                     f"{f['agreement_positional']:.3f} | {forced} |")
    lines += ["", f"{GENERATE_PROMPTS} questions (SQuAD; fixed ones without the data) x {GENERATE_TOKENS} new "
              f"tokens, greedy; every call timed {REPEATS} times, the fastest kept; agreement with transformers' "
              "batch-1 continuations (its own row: cached decoding against a full forward pass). vllm is vLLM's own "
              "API; vllm-runtime is reverie's VllmModel on it (model.runtime vllm), its logits from transformers."]
    d = result.get("distributed", {})
    if "skipped" in d:
        skipped.append(f"- distributed: {d['skipped']}")
    elif d:
        lines += ["", f"| full fine-tuning on {d['gpus']} GPUs | steps | tok/s | MFU | train s | launch s |",
                  "|---|---|---|---|---|---|"]
        for strategy in ("ddp", "fsdp"):
            f = d[strategy]
            if "failed" in f:
                skipped.append(f"- {strategy}: failed: {f['failed']}")
                continue
            lines.append(f"| {strategy} | {f['train_steps']:.0f} | {f['tokens_per_s']:.0f} | {f['mfu']:.1%} | "
                         f"{f['train_seconds']:.1f} | {f['launch_seconds']:.1f} |")
    if skipped:
        lines += ["", "Skipped:", *skipped]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, or a model directory, GGUF file or cached "
                        "hub id (as model.source).")
    parser.add_argument("--steps", type=int, default=30, help="Measured optimizer steps per Learn run.")
    parser.add_argument("--rows-per-step", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--datasheet-tflops", type=float, default=None,
                        help="The GPU's dense bf16 peak from its datasheet, for a second MFU figure.")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(HERE / "results" / "gpu"))
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="Comma-separated stages; one a chosen stage needs (peak, transformers) runs too.")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"gpu.py: no CUDA device here (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
              "nothing measured.")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from reverie.engines.models import resolve_source
    from reverie.errors import ReverieError

    try:
        directory = resolve_source(args.model, HERE / ".cache", REPO)
    except ReverieError as exc:
        print(f"gpu.py: {exc}", file=sys.stderr)
        return 1
    settings = {"model": args.model, "steps": args.steps, "rows_per_step": args.rows_per_step,
                "block_size": args.block_size, "datasheet_tflops": args.datasheet_tflops,
                "gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count()}
    partial = Path(args.out).with_suffix(".partial.json")
    result = json.loads(partial.read_text()) if partial.is_file() else {}
    if result.get("settings") != settings:
        result = {"settings": settings}
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                         f"CUDA {torch.version.cuda}")

    def peak() -> float:  # read when a stage runs, after the peak stage
        return result["peak"]["tflops"]

    stages = {
        "peak": peak_bf16,
        "learn-lora": lambda: learn("lora", directory, args, peak()),
        "learn-full": lambda: learn("full", directory, args, peak()),
        "transformers": lambda: generate("transformers", directory, result, Path(args.data)),
        "vllm": lambda: generate("vllm", directory, result, Path(args.data)),
        "vllm-runtime": lambda: vllm_runtime(directory, result, Path(args.data)),
        "distributed": lambda: distributed(directory, args, peak()),
    }
    wanted = args.stages.split(",")
    if unknown := [n for n in wanted if n not in stages]:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    names = [n for n in STAGES if n in wanted or any(NEEDS.get(w) == n for w in wanted)]
    run_stages(result, partial, names, stages)
    write_results(args.out, result, markdown(result))
    partial.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
