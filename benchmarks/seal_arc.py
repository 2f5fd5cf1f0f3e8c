"""The SEAL paper's few-shot ARC table with SmolLM2-135M-Instruct, on the SEAL authors' filtered ARC tasks.

    .venv/bin/python benchmarks/seal_arc.py [--samples 3] [--max-steps 16] [--rounds 1] [--conditions ...]

Conditions (engines/arc_bench.py), each scored by exact match of every test output on the evaluation tasks:

- icl: in-context learning only: the demonstrations in the prompt, no training.
- ttt: test-time training (a fresh LoRA on leave-one-out tasks of the demonstrations) with self-edits the
  untrained model wrote.
- seal: the same with self-edits written by the model after --rounds ReST-EM rounds on the training tasks.
- oracle: a fixed search over configurations (augmentation families x loss on all/output tokens x learning
  rate); the row is the single configuration that solves the most evaluation tasks (chosen on them: an upper
  reference, not a model selection). The tasks it solves are the subset the other rows are also reported on.

Self-edits are written by constrained decoding (each value of the configuration sampled from its allowed choices
by the model's probabilities) unless --decoding free. Every trial is journaled under --state as it ends and the
generator is checkpointed after each round, so a killed run resumes where it stopped. Results are rewritten after
each condition to benchmarks/results/seal_arc.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from reverie.config import ArcSealSettings, LoraSettings, ModelConfig
from reverie.data.arc import ArcTask, load_arc_tasks
from reverie.data.arc_self_edit import parse_arc_self_edit
from reverie.engines.arc_bench import ARC_CONDITIONS, ArcBench, oracle_configurations
from reverie.engines.arc_rest_em import ArcRoundResult
from reverie.engines.arc_ttt import ArcInnerLoop, ArcTrial
from reverie.engines.models import load_pretrained, resolve_source
from reverie.engines.rest_em import GeneratorRound, finished_rounds

ARC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "arc"
PAPER = {"icl": "0%", "ttt": "20%", "seal": "72.5%", "oracle": "100%"}
LABELS = {"icl": "in-context learning only", "ttt": "TTT + untrained self-edits",
          "seal": "SEAL (TTT + self-edits after ReST-EM)", "oracle": "oracle TTT configuration"}


FILES = {"training": "training_{}_filtered_1B_training_set", "evaluation": "evaluation_{}_filtered_1B_eval_set"}


def tasks(split: str, limit: int) -> list[ArcTask]:
    """The first `limit` tasks of the SEAL authors' filtered ARC training or evaluation split, with solutions."""
    name = FILES[split]
    return load_arc_tasks(ARC / f"arc-agi_{name.format('challenges')}.json",
                          ARC / f"arc-agi_{name.format('solutions')}.json")[:limit]


def self_edit_choices(edits: list[list[str]]) -> dict:
    """What the written self-edits chose: how many switched on each augmentation family, and each learning rate."""
    parsed = [parse_arc_self_edit(text) for per_task in edits for text in per_task]  # constrained: all valid
    return {"self_edits": len(parsed),
            "families": dict(Counter(f for edit in parsed for f in edit.families())),
            "learning_rates": {str(lr): n for lr, n in Counter(e.training.learning_rate for e in parsed).items()}}


def _rate(r: dict, key: str) -> str:
    low, high = r[f"{key}_ci95"]
    return f"{100 * r[key]:.1f}% ({100 * low:.1f}–{100 * high:.1f})"


def markdown(summary: dict, args: argparse.Namespace) -> str:
    lines = [f"Evaluation tasks: {summary['evaluation_tasks']}; ReST-EM training tasks: {args.train_tasks}. "
             f"k = {args.samples} self-edits per task ({args.decoding} decoding), step budget {args.max_steps} per "
             f"self-edit, token budget {args.max_tokens}, LoRA rank {args.rank}, {args.rounds} ReST-EM round(s).", ""]
    for scope, title in (("all", "all evaluation tasks"), ("subset", "the oracle's subset")):
        rows = {c: row[scope] for c, row in summary["conditions"].items() if scope in row}
        if not rows:
            continue
        lines += [f"### On {title}" + (f" ({', '.join(summary['subset'])})" if scope == "subset" else ""), "",
                  "| condition | per self-edit (95% CI) | tasks solved | per task (95% CI) | valid self-edits | "
                  "right shape | cells right | s per trial | paper, Llama-3.2-1B |", "|---" * 9 + "|"]
        for condition in [c for c in ARC_CONDITIONS if c in rows]:
            r = rows[condition]
            valid = "-" if condition in ("icl", "oracle") else f"{r['valid']}/{r['self_edits']}"
            lines.append(f"| {LABELS[condition]} | {_rate(r, 'per_self_edit')} | {r['tasks_solved']}/{r['tasks']} | "
                         f"{_rate(r, 'per_task')} | {valid} | {100 * r['right_shape']:.0f}% | "
                         f"{100 * r['cell_accuracy']:.0f}% | {r['s_per_trial']:.1f} | "
                         f"{PAPER[condition]} |")
        lines.append("")
    if summary["oracle"]:
        o = summary["oracle"]
        lines += [f"- Oracle: configuration {o['best']} of {len(o['tasks_solved_per_configuration'])} "
                  f"({json.dumps(o['configuration'])}); tasks solved per configuration "
                  f"{o['tasks_solved_per_configuration']}; by any configuration {o['tasks_solved_by_any']}."]
    for r in summary.get("rounds", []):
        lines.append(f"- ReST-EM round {r['round']}: {r['solved']} of {r['self_edits']} self-edits solved their task "
                     f"({r['tasks_solved']} of {r['tasks']} training tasks), {r['kept']} kept, "
                     f"{r['seconds'] / 60:.1f} min.")
    for condition, chosen in summary.get("self_edit_choices", {}).items():
        if condition != "seal_same_as_ttt":
            lines.append(f"- {condition} self-edits ({chosen['self_edits']}): augmentation families switched on "
                         f"{chosen['families']}, learning rates {chosen['learning_rates']}.")
    if "seal_same_as_ttt" in summary.get("self_edit_choices", {}):
        same = summary["self_edit_choices"]["seal_same_as_ttt"]
        lines.append(f"- The seal condition's self-edits are {'identical to' if same else 'not'} the untrained ones"
                     f"{'' if same else ' (the generator changed)'}.")
    lines.append("- Right shape and cells right: partial credit of the predicted grids (cells right counts 0 for a "
                 "grid of the wrong shape), averaged over self-edits; exact match is what scores.")
    lines.append("- The paper's figures are rates over self-edits on its 8 evaluation tasks.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-tasks", type=int, default=12)
    parser.add_argument("--eval-tasks", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2, help="self-edits per task (k)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=16, help="optimizer steps per self-edit")
    parser.add_argument("--max-tokens", type=int, default=1024, help="longest training sequence or test prompt")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--decoding", choices=("constrained", "free"), default="constrained")
    parser.add_argument("--oracle-lrs", default="1e-3", help="comma-separated learning rates in the oracle's search")
    parser.add_argument("--oracle-families", default="none,basic",
                        help="comma-separated augmentation sets in the oracle's search, each 'none' or families "
                        "joined by '+' (e.g. basic+size)")
    parser.add_argument("--conditions", default="icl,oracle,ttt,seal", help="comma-separated, run in order")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--state", default="benchmarks/.cache/seal_arc")
    parser.add_argument("--out", default="benchmarks/results/seal_arc")
    parser.add_argument("--report-only", action="store_true", help="rewrite the results from the journal")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    conditions = args.conditions.split(",")
    if unknown := set(conditions) - set(ARC_CONDITIONS):
        parser.error(f"unknown condition(s) {', '.join(sorted(unknown))}; choose from {', '.join(ARC_CONDITIONS)}")

    settings = ArcSealSettings(samples=args.samples, rounds=args.rounds, max_steps=args.max_steps,
                               max_tokens=args.max_tokens, decoding=args.decoding,
                               lora=LoraSettings(rank=args.rank, alpha=2 * args.rank))
    model_dir = resolve_source("embedded", Path("benchmarks/.cache"), Path("."))

    def load_loop(directory: Path | None) -> ArcInnerLoop:
        loaded = load_pretrained(directory or model_dir, ModelConfig())
        return ArcInnerLoop(loaded.model, loaded.tokenizer, settings)

    def on_round(finished: GeneratorRound) -> None:
        r = finished.result
        print(f"round {finished.round}: {r.solved}/{r.self_edits} solved, {r.kept} kept, {r.seconds:.0f} s", flush=True)

    def report(key: str, trial: ArcTrial) -> None:
        print(f"{key}: {'solved' if trial.solved else 'no'} ({trial.steps} steps, {trial.seconds:.1f} s"
              f"{', ' + trial.reason if trial.reason else ''})", flush=True)

    families = tuple(() if spec == "none" else tuple(spec.split("+")) for spec in args.oracle_families.split(","))
    oracle = oracle_configurations(families, tuple(float(x) for x in args.oracle_lrs.split(",")))
    bench = ArcBench(load_loop, settings, tasks("evaluation", args.eval_tasks), tasks("training", args.train_tasks),
                     Path(args.state), oracle=oracle, on_round=on_round, report=report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write_report() -> None:
        written = {c: bench.journal.get(f"edits/{c}") for c in ("ttt", "seal") if bench.journal.get(f"edits/{c}")}
        choices = {c: self_edit_choices(edits) for c, edits in written.items()}
        if len(written) == 2:
            choices["seal_same_as_ttt"] = written["seal"] == written["ttt"]
        rounds = [{"round": r.round, **asdict(r.result)}
                  for r in finished_rounds(Path(args.state) / "rest-em", ArcRoundResult)]
        summary = bench.summary() | {"rounds": rounds, "self_edit_choices": choices, "settings": vars(args)}
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(summary, args))
        print(markdown(summary, args), flush=True)

    for condition in [] if args.report_only else conditions:
        started = time.perf_counter()
        bench.run(condition)
        print(f"{condition}: done in {time.perf_counter() - started:.0f} s", flush=True)
        write_report()
    if args.report_only:
        write_report()


if __name__ == "__main__":
    main()
