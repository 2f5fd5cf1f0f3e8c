"""Compress on the embedded SmolLM2-135M-Instruct, on this machine's CPU, side by side in one process:

1. cycle: one sleep cycle with compress.strategies [merge, distil, prune, quantize] after an aggressive Learn
   (learning rate 5e-3 on the demo knowledge plus general rows from the AlpacaEval pairs' preferred answers): every
   variant on the front with its quality and cost, the one the policy kept, and what the cycle stored in bytes;
2. decode: the float32 merged model under transformers `generate` against its q8_0 and q4_k_m GGUF files under
   llama.cpp, on 8 chat prompts: tokens/s at batch 1 (64 tokens each), greedy-token agreement on the 64-token
   continuations (position by position, and teacher-forced: the quantized model's greedy choice at every
   position of the float model's continuation), and perplexity on 24 SQuAD passages no phase trains on;
3. distil: the general accuracy (PIQA, 300 items, the Gate's suite code) and knowledge probe accuracy of the base
   release, the Learn model and the Learn model distilled from the release on the same general rows.

    .venv/bin/python benchmarks/compress.py [--workspace DIR] [--out benchmarks/results/compress] [--data ../shared/data]

Every stage's figures go to <out>.partial.json as it finishes; a rerun skips finished stages. Writes <out>.json
and <out>.md at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

from results_io import run_stages, write_results

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENERAL_ROWS = 200  # AlpacaEval preferred answers ingested as the general pool
PIQA_ITEMS = 300
PROMPTS = ["Explain why the sky is blue.", "Write a short poem about the sea.",
           "What are three tips for staying focused while studying?", "Describe how a bicycle works.",
           "Give me a recipe for a simple tomato soup.", "What is the capital of France and why is it famous?",
           "Summarise the plot of Romeo and Juliet.", "How do plants make their food?"]
DECODE_TOKENS = 64

CONFIG = {
    "learn": {"pool_records": 64, "train": {"learning_rate": 5e-3, "epochs": 8}},
    "compress": {"strategies": ["merge", "distil", "prune", "quantize"],
                 "distil": {"rows": 64, "train": {"learning_rate": 5e-4, "epochs": 2}},
                 "front": {"reasoning": str(REPO / "src" / "reverie" / "data" / "demo" / "general_mc.jsonl")}},
    "dream": {"enabled": False},
}


def configure(ws: Path, data: Path) -> None:
    from reverie.presets import preset_text

    config = yaml.safe_load(preset_text("default"))
    for section, values in CONFIG.items():
        config[section] = {**config.get(section, {}), **values}
    config["eval"] |= {"general_suite": str(data / "piqa" / "piqa_valid.jsonl"), "general_limit": PIQA_ITEMS}
    (ws / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def cli(ws: Path, *args: str) -> str:
    command = [sys.executable, "-m", "reverie", *args, "-w", str(ws)]
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(done.stderr[-3000:])
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr[-2000:]}")
    return done.stdout


def setup(ws: Path, data: Path) -> dict:
    ws.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "reverie", "init", str(ws)], check=True, capture_output=True)
    configure(ws, data)
    rows = []
    for line in (data / "preference" / "alpaca_eval_pairs.jsonl").read_text().splitlines()[:GENERAL_ROWS]:
        pair = json.loads(line)
        prompt = pair["prompt"] if isinstance(pair["prompt"], str) else pair["prompt"][-1]["content"]
        rows.append({"prompt": prompt, "completion": pair["chosen"]})
    general = ws / "general.jsonl"
    general.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"ingest": cli(ws, "data", "ingest", str(general), "--source", "team", "--bucket", "general",
                          "--name", "alpaca-answers")}


def cycle(ws: Path) -> dict:
    from reverie.cycle import run_cycle
    from reverie.engines.models import artifact_bytes
    from reverie.phases.outputs import CompressOutput, read_as
    from reverie.workspace import Workspace

    workspace = Workspace.open(ws)
    outcome = run_cycle(workspace)
    runs = {r.phase: r for r in workspace.registry.phase_runs(outcome.cycle_id)}
    output = read_as(runs["compress"], CompressOutput)
    made = [m for m in workspace.registry.list_models() if m.cycle_id == outcome.cycle_id]
    stored = {h for m in made for h in (m.weights, m.adapter) if h}
    return {"cycle": outcome.cycle_id, "outcome": "released" if outcome.released else "rejected",
            "model": outcome.model_id, "reasons": outcome.reasons,
            "compress_seconds": runs["compress"].wall_s,
            "variants": [v.model_dump() for v in output.variants()],
            "strategies": [{"strategy": s.strategy, "kept": s.kept, "reason": s.reason} for s in output.strategies],
            "stored_bytes": {h: artifact_bytes(workspace, h) for h in stored},
            "models": [{"id": m.id, "phase": m.phase, "weights": m.weights, "adapter": m.adapter} for m in made]}


def learned_models(ws: Path, result: dict) -> tuple:
    """The workspace, the base release and the Learn model with its adapter merged (the `merge` strategy's)."""
    from reverie.workspace import Workspace

    workspace = Workspace.open(ws)
    learn = next(m for m in result["cycle"]["models"] if m["phase"] == "learn")
    merged = next(v["model"] for v in result["cycle"]["variants"] if v["name"] == "merged")
    base = workspace.registry.get_model(workspace.registry.get_model(learn["id"]).parent_id)
    return workspace, base, workspace.registry.get_model(merged)


def decode(ws: Path, result: dict) -> dict:
    """Float32 transformers against llama.cpp's q8_0 and q4_k_m, on the same prompts, in one process."""
    from reverie.engines.generation import generate
    from reverie.engines.gguf_export import quantize_gguf, write_gguf
    from reverie.engines.llama_cpp_runtime import LlamaCppModel
    from reverie.engines.models import load_version, weights_dir
    from reverie.engines.prompts import user_prompt_ids
    from reverie.engines.scoring import perplexities

    workspace, _, merged = learned_models(ws, result)
    loaded = load_version(workspace, merged)
    tokenizer = loaded.tokenizer
    scratch = workspace.cache_dir / "bench-gguf"
    scratch.mkdir(parents=True, exist_ok=True)
    full = write_gguf(weights_dir(workspace, merged), scratch / "f32.gguf")
    runtimes = {"float32 (transformers)": loaded.model}
    for fmt in ("q8_0", "q4_k_m"):
        runtimes[f"{fmt} (llama.cpp)"] = LlamaCppModel(quantize_gguf(full, scratch / f"{fmt}.gguf", fmt))
    prompts = [user_prompt_ids(tokenizer, p) for p in PROMPTS]
    passages = [p["context"] for p in json.loads((Path(result["data"]) / "squad" / "squad_val_passages.json")
                                                  .read_text())[-24:]]
    figures, continuations = {}, {}
    for name, model in runtimes.items():
        generate(model, tokenizer, prompts[:1], 8, 1, exact=True)  # warm-up, not timed
        start = time.perf_counter()
        texts = [generate(model, tokenizer, [p], DECODE_TOKENS, 1, exact=True)[0][0] for p in prompts]
        seconds = time.perf_counter() - start
        continuations[name] = [continuation_ids(model, tokenizer, p) for p in prompts]
        ppl = perplexities(model, tokenizer, passages, batch_size=4)
        figures[name] = {"tokens_per_s_b1": DECODE_TOKENS * len(prompts) / seconds,
                         "perplexity": sum(ppl) / len(ppl), "sample": texts[0][:160],
                         "bytes": (full.stat().st_size if "float32" in name else
                                   (scratch / f"{name.split()[0]}.gguf").stat().st_size)}
    reference = "float32 (transformers)"
    for name, model in runtimes.items():
        figures[name] |= {
            "speedup": figures[name]["tokens_per_s_b1"] / figures[reference]["tokens_per_s_b1"],
            "perplexity_rise": figures[name]["perplexity"] / figures[reference]["perplexity"] - 1,
            "agreement_positional": positional(continuations[name], continuations[reference]),
            "agreement_teacher_forced": teacher_forced(model, prompts, continuations[reference]),
        }
    return {"runtimes": figures, "prompts": len(prompts), "tokens": DECODE_TOKENS,
            "threads": os.cpu_count(), "passages": len(passages)}


def continuation_ids(model, tokenizer, prompt: list[int]) -> list[int]:
    out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return out[0, len(prompt):].tolist()


def positional(ours: list[list[int]], theirs: list[list[int]]) -> float:
    pairs = [(a, b) for x, y in zip(ours, theirs) for a, b in zip(x, y)]
    return sum(a == b for a, b in pairs) / len(pairs)


@torch.inference_mode()
def teacher_forced(model, prompts: list[list[int]], continuations: list[list[int]]) -> float:
    """Share of positions where the model's greedy next token equals the float model's continuation token."""
    same = total = 0
    for prompt, continuation in zip(prompts, continuations):
        ids = torch.tensor([prompt + continuation])
        predicted = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].argmax(-1).tolist()
        same += sum(a == b for a, b in zip(predicted, continuation))
        total += len(continuation)
    return same / total


def distil_stage(ws: Path, result: dict) -> dict:
    """General and knowledge accuracy of base, Learn and Learn-distilled-from-the-release, side by side."""
    from reverie.cycle_inputs import load_inputs
    from reverie.data.multiple_choice import load_choice_items
    from reverie.data.pool import draw_for_learn
    from reverie.data.splits import knowledge_probe, reading_as
    from reverie.engines.distillation import distil
    from reverie.engines.evaluation import probe_accuracy
    from reverie.engines.models import LoadedModel, attach_lora, load_version
    from reverie.engines.suites.general import GeneralSuite

    workspace, base, merged = learned_models(ws, result)
    config = workspace.config
    cycle = workspace.registry.get_cycle(result["cycle"]["cycle"])
    inputs = load_inputs(workspace, cycle)
    rows = draw_for_learn(workspace, inputs.draw_seed, inputs.pool).examples[: config.compress.distil.rows]
    probe = knowledge_probe(inputs.knowledge)
    with reading_as("gate"):  # an independent check of what the Gate would see
        items = load_choice_items(config.eval.general_suite, workspace.root, config.eval.general_limit)
        suite = GeneralSuite(items, config.eval.batch_size)
        teacher = load_version(workspace, base)
        learned = load_version(workspace, merged)

        def scores(model, tokenizer) -> dict:
            results = suite.run(model, tokenizer)
            general = sum(r.scores["accuracy"] for r in results) / len(results)
            knowledge = probe_accuracy(LoadedModel(model, tokenizer), probe, config.eval.max_new_tokens,
                                       config.eval.batch_size)
            return {"general_accuracy": general, "knowledge_probe_accuracy": knowledge}

        figures = {"base": scores(teacher.model, teacher.tokenizer),
                   "learn": scores(learned.model, learned.tokenizer)}
        student = attach_lora(learned.model, config.learn.lora, config.learn.train.seed)
        report = distil(student, teacher.model, learned.tokenizer, rows, config.compress.distil, "bench: distil")
        figures["distilled"] = scores(student.merge_and_unload().eval(), learned.tokenizer)
    drop = figures["base"]["general_accuracy"] - figures["learn"]["general_accuracy"]
    won_back = figures["distilled"]["general_accuracy"] - figures["learn"]["general_accuracy"]
    return {"scores": figures, "kl_before": report.kl_before, "kl_after": report.kl_after, "rows": len(rows),
            "general_items": len(items), "drop": drop, "won_back": won_back,
            "recovered_share": won_back / drop if drop > 0 else None}


def markdown(result: dict) -> str:
    lines = [f"# Compress on SmolLM2-135M-Instruct ({result['machine']})", ""]
    if "cycle" in result:
        c = result["cycle"]
        lines += ["## The front (one cycle, every variant on the same probe)", "",
                  "| strategy | variant | format | probe acc. | perplexity | distinct-2 | reasoning | tok/s b1 | "
                  "tok/s b8 | memory MB | disk MB | J/token (est.) | kept | reason |", "|" + "---|" * 14]
        for v in c["variants"]:
            q, k = v["quality"], v["cost"]
            lines.append(f"| {v['strategy']} | {v['name']} | {v['format']} | {v['accuracy']:.3f} | "
                         f"{q.get('perplexity', float('nan')):.2f} | {q.get('distinct_2', float('nan')):.3f} | "
                         f"{q.get('reasoning_accuracy', float('nan')):.3f} | {k.get('tokens_per_s_b1', 0):.1f} | "
                         f"{k.get('tokens_per_s_b8', 0):.1f} | {k.get('memory_mb', 0):.0f} | "
                         f"{k.get('disk_bytes', 0) / 1e6:.0f} | {k.get('joules_per_token', 0):.3f} | "
                         f"{'yes' if v['kept'] else ''} | {v['reason']} |")
        total = sum(c["stored_bytes"].values())
        lines += ["", f"Cycle {c['cycle']}: {c['outcome']}; Compress took {c['compress_seconds']:.0f} s; the cycle "
                  f"stored {total / 1e6:.0f} MB of weights and adapters "
                  f"({', '.join(f'{b / 1e6:.0f}' for b in sorted(c['stored_bytes'].values(), reverse=True))} MB).", ""]
    if "decode" in result:
        d = result["decode"]
        lines += [f"## Decode: {d['prompts']} chat prompts x {d['tokens']} tokens, batch 1, {d['threads']} threads",
                  "", "| runtime | tokens/s | speed-up | greedy agreement (positional) | (teacher-forced) | "
                  f"perplexity on {d['passages']} SQuAD passages | rise | MB |", "|" + "---|" * 8]
        for name, f in d["runtimes"].items():
            lines.append(f"| {name} | {f['tokens_per_s_b1']:.1f} | {f['speedup']:.2f}x | "
                         f"{f['agreement_positional']:.3f} | {f['agreement_teacher_forced']:.3f} | "
                         f"{f['perplexity']:.3f} | {f['perplexity_rise'] * 100:+.2f}% | {f['bytes'] / 1e6:.0f} |")
        lines.append("")
    if "distil" in result:
        s = result["distil"]
        lines += [f"## Distillation from the release ({s['rows']} general rows, KL {s['kl_before']:.4f} -> "
                  f"{s['kl_after']:.4f}; PIQA {s['general_items']} items)", "",
                  "| model | general accuracy | knowledge probe accuracy |", "|---|---|---|"]
        for name, f in s["scores"].items():
            lines.append(f"| {name} | {f['general_accuracy']:.3f} | {f['knowledge_probe_accuracy']:.3f} |")
        share = s["recovered_share"]
        lines += ["", f"Learn lost {s['drop']:+.3f} general accuracy; distillation won back {s['won_back']:+.3f}"
                  + (f" ({share:.0%} of the drop)." if share is not None else " (no drop to recover).")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default=str(Path.home() / ".cache" / "reverie-bench" / "compress"))
    parser.add_argument("--out", default=str(HERE / "results" / "compress"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--stages", default="setup,cycle,decode,distil",
                        help="Comma-separated stages, run in order; finished ones are skipped.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ws, data = Path(args.workspace), Path(args.data)
    partial = Path(args.out).with_suffix(".partial.json")
    result = json.loads(partial.read_text()) if partial.is_file() else {}
    if result.get("workspace") != str(ws) or not (ws / "reverie.yaml").is_file():
        result = {"workspace": str(ws)}
    result |= {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
               "data": str(data)}
    stages: dict[str, Callable[[], dict]] = {
        "setup": lambda: setup(ws, data),
        "cycle": lambda: cycle(ws),
        "decode": lambda: decode(ws, result),
        "distil": lambda: distil_stage(ws, result),
    }
    if ws.is_dir():
        configure(ws, data)
    run_stages(result, partial, args.stages.split(","), stages)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
