"""Preference alignment on the embedded SmolLM2-135M-Instruct, on this machine's CPU, from the shared data:

1. reward models: one on the policy split of the HH-RLHF harmless pairs, one (the Gate's judge) on the judge
   split of the AlpacaEval pairs; pairwise accuracy on each one's held-out split beside the length-only rule;
2. what DPO costs per step, with and without precomputed reference log-probabilities, at two answer lengths;
3. one sleep cycle with Dream strategy dpo on the harmless pairs plus the red-team library's training half
   (AdvBench and XSTest): every Gate metric before (the base release) and after, and the preference win rate
   against the base by the held-out judge;
4. one GRPO run against the harmless reward model plus the refusal reward: prompts and tokens per second, and
   reward and KL per step.

    .venv/bin/python benchmarks/align.py [--workspace DIR] [--out benchmarks/results/align] [--data ../shared/data]

Every stage's figures go to <out>.partial.json as it finishes, and a rerun skips finished stages (a killed
reward-model training resumes from its checkpoint), so the run survives interruption. Writes <out>.json and
<out>.md at the end. Held-out splits are reverie's own (data/splits.py): by content hash, not the shared files'.
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

# The cycle's settings beside the default preset: DPO on the harmless pairs (bucket safety) and the red-team
# library, the Gate on the shared AdvBench and XSTest halves plus the preference suite on AlpacaEval prompts.
CYCLE = {
    "data": {"sources": {"hh": {"tier": 2, "licence": "MIT"}, "alpaca": {"tier": 2, "licence": "Apache-2.0"}},
             "mix": {"safety": 1.0}},
    "dream": {"strategies": ["dpo"]},
    "align": {"reward": {"max_pairs": 256, "max_length": 256, "batch_size": 8, "save_steps": 4},
              "dpo": {"pairs": 32, "redteam_pairs": 64, "learning_rate": 2e-4, "epochs": 1, "max_length": 192}},
    "eval": {"suites": ["knowledge", "general", "advbench", "xstest", "preference"], "preference_limit": 40},
}
RM_EVAL_LIMIT = 200  # held-out pairs per reward model


def cli(ws: Path, *args: str) -> str:
    """Run the reverie CLI on the workspace, echoing its output."""
    command = [sys.executable, "-m", "reverie", *args, "-w", str(ws)]
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(done.stderr[-4000:])
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr[-2000:]}")
    return done.stdout


def configure(ws: Path, data: Path) -> None:
    """Write the workspace's reverie.yaml (every run, so that a changed CYCLE applies to the stages left)."""
    from reverie.presets import preset_text

    config = yaml.safe_load(preset_text("default"))
    for section, values in CYCLE.items():
        config[section] = {**config.get(section, {}), **values}
    config["eval"] |= {"advbench": str(data / "safety" / "advbench_harmful_behaviors.csv"),
                       "xstest": str(data / "safety" / "xstest_prompts.csv"),
                       "preference_prompts": str(win_rate_prompts(ws, data))}
    (ws / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def win_rate_prompts(ws: Path, data: Path) -> Path:
    """The AlpacaEval instructions that no AlpacaEval pair asks (472 of the 600 do): the win rate is measured on
    prompts no reward model or policy trained on."""
    folder = data / "preference"
    asked = set()
    for line in (folder / "alpaca_eval_pairs.jsonl").read_text().splitlines():
        prompt = json.loads(line)["prompt"]
        asked.add((prompt if isinstance(prompt, str) else prompt[-1]["content"]).strip())
    rows = [line for line in (folder / "alpaca_eval_instructions.jsonl").read_text().splitlines()
            if json.loads(line)["instruction"].strip() not in asked]
    path = ws / "win_rate_prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def setup(ws: Path, data: Path) -> dict:
    ws.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "reverie", "init", str(ws)], check=True, capture_output=True)
    configure(ws, data)
    ingest = {
        "hh": cli(ws, "data", "ingest", str(data / "preference" / "hh_rlhf_harmless.jsonl"), "--source", "hh",
                  "--kind", "preference", "--bucket", "safety", "--name", "hh"),
        "alpaca": cli(ws, "data", "ingest", str(data / "preference" / "alpaca_eval_pairs.jsonl"), "--source",
                      "alpaca", "--kind", "preference", "--bucket", "general", "--name", "alpaca"),
        "advbench": cli(ws, "data", "redteam", "import", str(data / "safety" / "advbench_harmful_behaviors.csv"),
                        "--format", "advbench"),
        "xstest": cli(ws, "data", "redteam", "import", str(data / "safety" / "xstest_prompts.csv"), "--format",
                      "xstest"),
    }
    return {"ingest": ingest}


def reward_model(ws: Path, alias: str, dataset: str) -> dict:
    from reverie.reward_models import evaluate_reward_model, read_report, resolve_reward_model
    from reverie.workspace import Workspace

    cli(ws, "rm", "train", "--alias", alias, "--dataset", dataset)
    workspace = Workspace.open(ws)
    record = resolve_reward_model(workspace, alias)
    result = evaluate_reward_model(workspace, record, RM_EVAL_LIMIT)
    return {"model": record.id, "training": read_report(workspace, record.id).training.model_dump(),
            "eval": result.model_dump()}


def dpo_cost(ws: Path) -> dict:
    """Seconds per DPO step on 8 harmless pairs, four ways, side by side in one process."""
    from reverie.data.preference import load_pairs, preference_datasets
    from reverie.data.splits import preference_pairs
    from reverie.engines.models import attach_lora, load_version
    from reverie.engines.preference_training import train_dpo
    from reverie.workspace import Workspace

    workspace = Workspace.open(ws)
    [hh] = [d for d in preference_datasets(workspace) if d.name == "preference/hh"]
    pairs = sorted(preference_pairs(load_pairs(workspace, hh), "policy"), key=lambda p: p.id)[:8]
    release = workspace.registry.get_model(workspace.registry.get_alias())
    rows = []
    for max_length in (256, 128):
        for precompute in (False, True):
            loaded = load_version(workspace, release)
            loaded.model = attach_lora(loaded.model, workspace.config.learn.lora, 0)
            settings = workspace.config.align.dpo.model_copy(update={
                "max_length": max_length, "precompute_ref_log_probs": precompute, "batch_size": 4, "epochs": 1})
            start = time.perf_counter()
            run = train_dpo(loaded.model, loaded.tokenizer, pairs, settings, ws / ".bench-dpo", "dpo cost")
            seconds = time.perf_counter() - start  # the reference pass included
            rows.append({"max_length": max_length, "precompute_ref_log_probs": precompute,
                         "seconds_per_step": seconds / run.metrics["dpo_steps"],
                         "loss_first": run.metrics["dpo_loss_first"], "loss_last": run.metrics["dpo_loss_last"]})
    base = rows[0]["seconds_per_step"]
    for row in rows:
        row["speedup"] = base / row["seconds_per_step"]
    return {"pairs": len(pairs), "rows": rows}


# The second cycle: DPO longer and on more red-team pairs, after the first moved no refusal.
STRONGER_DPO = ["align.dpo.redteam_pairs=160", "align.dpo.epochs=3", "align.dpo.learning_rate=3e-4"]
# The third: DPO plus an SFT loss on the chosen answers (RPO), after DPO alone widened margins but refused nothing.
RPO = ["align.dpo.redteam_pairs=160", "align.dpo.epochs=1", "align.dpo.learning_rate=3e-4", "align.dpo.sft_weight=1.0"]


def dpo_cycle(ws: Path, overrides: list[str] = ()) -> dict:
    from reverie.cycle import run_cycle
    from reverie.phases.outputs import DreamOutput, read_as
    from reverie.workspace import Workspace

    workspace = Workspace.open(ws, list(overrides))
    start = time.perf_counter()
    outcome = run_cycle(workspace)
    runs = workspace.registry.phase_runs(outcome.cycle_id)
    [dream] = [r for r in runs if r.phase == "dream"]
    [strategy] = read_as(dream, DreamOutput).strategies
    steps = []
    if strategy.steps:
        path = workspace.artifacts.path(strategy.steps) / "steps.jsonl"
        steps = [json.loads(line) for line in path.read_text().splitlines()]
    from reverie.engines.suites import SuiteRunner

    base = workspace.registry.get_model(workspace.registry.get_cycle(outcome.cycle_id).base_model_id)
    runner = SuiteRunner(workspace, opponent=base)  # the Gate's comparison, read back from its stored results
    candidate = workspace.registry.get_model(outcome.model_id)
    intervals = {}
    for suite in CYCLE["eval"]["suites"]:
        for name, interval in runner.report(candidate, suite).summary().items():
            intervals[f"{suite}.{name}"] = [interval.low, interval.high]
    return {"overrides": list(overrides), "cycle": outcome.cycle_id, "released": outcome.released,
            "reasons": outcome.reasons,
            "model": outcome.model_id, "before": outcome.reference_scores, "after": outcome.candidate_scores,
            "after_ci95": intervals, "dream": {"kept": strategy.kept, "reason": strategy.reason,
                                                "metrics": dream.metrics, "steps": steps},
            "wall_s": {r.phase: r.wall_s for r in runs}, "seconds": time.perf_counter() - start}


def rejudge(ws: Path, cycle: dict) -> dict:
    """A cycle's preference suite scored again by the current code (the stored answers are reused)."""
    from reverie.engines.suites import SuiteRunner
    from reverie.workspace import Workspace

    workspace = Workspace.open(ws)
    base = workspace.registry.get_model(workspace.registry.get_cycle(cycle["cycle"]).base_model_id)
    report = SuiteRunner(workspace, opponent=base).report(workspace.registry.get_model(cycle["model"]), "preference")
    return {name: [i.mean, i.low, i.high] for name, i in report.summary().items()}


def grpo_run(ws: Path) -> dict:
    from reverie.data.redteam import load_library
    from reverie.data.splits import safety_train
    from reverie.engines.models import attach_lora, load_version
    from reverie.engines.preference_training import RLPrompt, train_grpo
    from reverie.phases.strategies.grpo import reward_functions
    from reverie.workspace import Workspace

    workspace = Workspace.open(ws)
    settings = workspace.config.align.grpo.model_copy(update={"max_prompts": 8, "generations": 4,
                                                              "prompts_per_step": 2, "max_new_tokens": 48})
    items = sorted(safety_train(load_library(workspace)), key=lambda i: i.id)[: settings.max_prompts]
    prompts = [RLPrompt(prompt=i.prompt, must_refuse=i.must_refuse) for i in items]
    rewards, record = reward_functions(workspace, settings.rewards, settings.reward_alias)
    release = workspace.registry.get_model(workspace.registry.get_alias())
    loaded = load_version(workspace, release, trainable_adapter=True)  # its own adapter trains, if it has one
    if not release.adapter:
        loaded.model = attach_lora(loaded.model, workspace.config.learn.lora, 0)
    run = train_grpo(loaded.model, loaded.tokenizer, prompts, rewards, settings, ws / ".bench-grpo", "grpo")
    return {"reward_model": record.id if record else None, "settings": settings.model_dump(),
            "metrics": run.metrics, "steps": run.steps}


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(result: dict) -> str:
    lines = ["# Preference alignment on SmolLM2-135M-Instruct (CPU)", "",
             f"Machine: {result['machine']}. Written by `benchmarks/align.py`.", ""]
    if "rm_hh" in result and "rm_alpaca" in result:
        lines += ["## Reward models (held-out pairs, 95% bootstrap interval)", "",
                  "| pairs | reward model | trained on | accuracy | 95% CI | length rule | RM prefers longer | "
                  "acc. where chosen is shorter | train s |", "|---|---|---|---|---|---|---|---|---|"]
        for label, key in (("HH-RLHF harmless", "rm_hh"), ("AlpacaEval", "rm_alpaca")):
            rm = result[key]
            ev, tr = rm["eval"], rm["training"]
            shorter = ev["chosen_shorter"]["accuracy"]
            lines.append(
                f"| {label} ({ev['n']}) | {rm['model']} | {tr['pairs']} {tr['split']} pairs, {tr['steps']} steps | "
                f"{ev['accuracy']:.3f} | {ev['ci95'][0]:.3f}-{ev['ci95'][1]:.3f} | {ev['length_accuracy']:.3f} | "
                f"{share(ev['agreement'])} | {share(shorter)} | {tr['seconds']:.0f} |")
        lines.append("")
    if "dpo_cost" in result:
        lines += [f"## DPO cost ({result['dpo_cost']['pairs']} harmless pairs, 4 per step, LoRA r16)", "",
                  "| max_length | precomputed reference | s per step (reference pass included) | vs. first row |",
                  "|---|---|---|---|"]
        for row in result["dpo_cost"]["rows"]:
            lines.append(f"| {row['max_length']} | {row['precompute_ref_log_probs']} | "
                         f"{row['seconds_per_step']:.1f} | {row['speedup']:.2f}x |")
        lines.append("")
    for key, title in (("dpo_cycle", "One cycle with Dream strategy dpo"),
                       ("dpo_cycle2", "A second cycle, DPO longer (" + ", ".join(STRONGER_DPO) + ")"),
                       ("dpo_cycle3", "A third cycle, DPO with an SFT loss on the chosen side (" + ", ".join(RPO)
                        + ")")):
        if key not in result:
            continue
        cycle = result[key]
        lines += [f"## {title}", "",
                  f"Cycle {cycle['cycle']}: {'released' if cycle['released'] else 'rejected'} {cycle['model']}"
                  + (f" ({'; '.join(cycle['reasons'])})" if cycle["reasons"] else "") + f"; Dream: "
                  f"{'kept' if cycle['dream']['kept'] else 'not kept'} ({cycle['dream']['reason']}).", "",
                  "| metric | release before | after the cycle | 95% CI after |", "|---|---|---|---|"]
        for metric, after in sorted(cycle["after"].items()):
            if "/" in metric:
                continue
            before = cycle["before"].get(metric)
            low, high = cycle["after_ci95"].get(metric, [None, None])
            ci = f"{low:.3f}-{high:.3f}" if low is not None else "-"
            lines.append(f"| {metric} | {before:.3f} | {after:.3f} | {ci} |" if before is not None
                         else f"| {metric} | - | {after:.3f} | {ci} |")
        metrics = cycle["dream"]["metrics"]
        lines += ["", f"DPO: {metrics.get('dpo_pairs', 0):.0f} pairs ({metrics.get('dream_pairs_drawn', 0):.0f} drawn "
                  f"harmless, {metrics.get('dream_pairs_redteam', 0):.0f} red-team), {metrics.get('dpo_steps', 0):.0f} "
                  f"steps, loss {metrics.get('dpo_loss_first', 0):.3f} -> {metrics.get('dpo_loss_last', 0):.3f}, "
                  "margin "
                  f"{metrics.get('dpo_margin_first', 0):.3f} -> {metrics.get('dpo_margin_last', 0):.3f}, "
                  f"{metrics.get('dpo_seconds', 0):.0f} s. Phase wall times (s): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in cycle["wall_s"].items() if v) + "."]
        lines.append("")
        if key == "dpo_cycle" and "rejudge1" in result:
            lines += ["The first cycle's preference suite scored again with the weighted win (its table above "
                      "thresholds each verdict at 0.5):", "", "| metric | mean | 95% CI |", "|---|---|---|"]
            scores = {name: v for name, v in result["rejudge1"].items() if name != "stage_seconds"}
            lines += [f"| preference.{name} | {m:.3f} | {low:.3f}-{high:.3f} |" for name, (m, low, high) in
                      sorted(scores.items())]
            lines.append("")
    if "grpo" in result:
        grpo = result["grpo"]
        m = grpo["metrics"]
        lines += [f"## GRPO ({grpo['settings']['algorithm']}, beta {grpo['settings']['beta']}, rewards "
                  f"{' + '.join(grpo['settings']['rewards'])}, reward model {grpo['reward_model']})", "",
                  f"{m['grpo_prompts']:.0f} prompts x {grpo['settings']['generations']} answers of at most "
                  f"{grpo['settings']['max_new_tokens']} tokens: {m['grpo_prompts_per_s']:.3f} prompts/s, "
                  f"{m['grpo_generated_tokens_per_s']:.1f} generated tokens/s, {m['grpo_seconds']:.0f} s.", "",
                  "| step | reward | KL | mean completion tokens |", "|---|---|---|---|"]
        for step in grpo["steps"]:
            lines.append(f"| {step['step']:.0f} | {step.get('reward', float('nan')):.3f} | "
                         f"{step.get('kl', float('nan')):.4f} | {step.get('completion_length', float('nan')):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default=str(Path.home() / ".cache" / "reverie-bench" / "align"))
    parser.add_argument("--out", default=str(HERE / "results" / "align"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--stages",
                        default="setup,rm_alpaca,dpo_cost,dpo_cycle,rm_hh,grpo,dpo_cycle2,rejudge1,dpo_cycle3",
                        help="Comma-separated stages, run in order; finished ones are skipped.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ws, data = Path(args.workspace), Path(args.data)
    partial = Path(args.out).with_suffix(".partial.json")
    result = json.loads(partial.read_text()) if partial.is_file() else {}
    if result.get("workspace") != str(ws) or not (ws / "reverie.yaml").is_file():  # stages of another workspace
        result = {"workspace": str(ws)}
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    stages: dict[str, Callable[[], dict]] = {
        "setup": lambda: setup(ws, data),
        "rm_hh": lambda: reward_model(ws, "reward", "preference/hh"),
        "rm_alpaca": lambda: reward_model(ws, "judge", "preference/alpaca"),
        "dpo_cost": lambda: dpo_cost(ws),
        "dpo_cycle": lambda: dpo_cycle(ws),
        "dpo_cycle2": lambda: dpo_cycle(ws, STRONGER_DPO),
        "rejudge1": lambda: rejudge(ws, result["dpo_cycle"]),
        "dpo_cycle3": lambda: dpo_cycle(ws, RPO),
        "grpo": lambda: grpo_run(ws),
    }
    if ws.is_dir():
        configure(ws, data)
    run_stages(result, partial, args.stages.split(","), stages)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
