"""Two Dream strategies on the embedded SmolLM2 and the demo knowledge: false-premise detection before and after
one counterfactual Dream, with knowledge accuracy and its interval beside it, and chain-of-thought voting's
agreement and the accuracy of the answers it keeps.

    .venv/bin/python benchmarks/dreams_cf_cot.py [--stages cycle,counterfactual,cot] [--cot-samples 5]

Stages (resumable: a finished stage is not run again; the workspace lives under --state):
- cycle: one cycle from the demo preset with dream.strategies [counterfactual] (kept whatever its A/B check says, which
  is reported) and the false_premise suite in eval.suites (so the Gate judges it too);
- counterfactual: the model Dream started from (Compress's output) and Dream's model on the knowledge and
  false_premise suites, the cycle's frozen knowledge, both measured here in one run, with the paired difference
  after - before and its 95% interval (positive: the Dream raised it);
- cot: cot-consistency's voting (sampling only, no training) by the model Dream started from, on the training
  questions (dream.cot.reasoning adds a reasoning set: --set dream.cot.reasoning=PATH).

Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
from results_io import run_stages, write_results

from reverie.cycle import run_cycle
from reverie.cycle_inputs import load_inputs
from reverie.engines.libraries import quiet_libraries
from reverie.engines.models import load_version
from reverie.engines.suites import SuiteRunner
from reverie.phases.base import PhaseContext
from reverie.phases.outputs import CompressOutput, DreamOutput, read_as
from reverie.phases.strategies import DREAM
from reverie.stats import bootstrap_ci, paired_difference_ci
from reverie.workspace import Workspace

SUITES = ["knowledge", "general", "advbench", "xstest", "false_premise"]
MEASURED = {"knowledge": ["accuracy", "f1"], "false_premise": ["detection", "correction", "control"]}


def open_workspace(state: Path, overrides: list[str]) -> Workspace:
    if not (state / "reverie.yaml").exists():
        Workspace.init(state, preset="demo")
    # dream.max_regression 1: the Dream's model is kept whatever its A/B check says, so that what the Dream did is
    # measured (the A/B figures are reported beside it)
    return Workspace.open(state, [f"eval.suites=[{','.join(SUITES)}]", "dream.strategies=[counterfactual]",
                                  "dream.max_regression=1.0",
                                  *overrides])


def last_cycle_models(ws: Workspace) -> tuple[str, str, str]:
    """(cycle id, the model Dream started from, the model Dream made or passed through)."""
    cycle = ws.registry.list_cycles()[-1]
    runs = {r.phase: r for r in ws.registry.phase_runs(cycle.id) if r.status == "finished"}
    return cycle.id, read_as(runs["compress"], CompressOutput).model, read_as(runs["dream"], DreamOutput).model


def cycle_stage(ws: Workspace) -> dict:
    outcome = run_cycle(ws)
    runs = {r.phase: r for r in ws.registry.phase_runs(outcome.cycle_id) if r.status == "finished"}
    dream = read_as(runs["dream"], DreamOutput)
    return {"cycle": outcome.cycle_id, "verdict": "released" if outcome.released else "rejected",
            "reasons": outcome.reasons, "dream_metrics": runs["dream"].metrics,
            "dream_kept": [s.kept for s in dream.strategies], "dream_reasons": [s.reason for s in dream.strategies],
            "phase_wall_s": {phase: round(run.wall_s or 0.0, 1) for phase, run in runs.items()}}


def counterfactual_stage(ws: Workspace) -> dict:
    cycle_id, before_id, after_id = last_cycle_models(ws)
    runner = SuiteRunner(ws, load_inputs(ws, ws.registry.get_cycle(cycle_id)).knowledge)
    figures: dict = {"before_model": before_id, "after_model": after_id}
    for suite, metrics in MEASURED.items():
        before = runner.report(ws.registry.get_model(before_id), suite)
        after = runner.report(ws.registry.get_model(after_id), suite)
        for metric in metrics:
            b, a = before.values(metric), after.values(metric)
            shared = sorted(b.keys() & a.keys())
            difference = paired_difference_ci([b[k] for k in shared], [a[k] for k in shared])
            figures[f"{suite}.{metric}"] = {
                "before": asdict(bootstrap_ci(list(b.values()))), "after": asdict(bootstrap_ci(list(a.values()))),
                "after_minus_before_ci95": [difference.low, difference.high]}
    return figures


def cot_stage(ws: Workspace, samples: int, tokens: int) -> dict:
    cycle_id, before_id, _ = last_cycle_models(ws)
    cycle = ws.registry.get_cycle(cycle_id)
    voting = Workspace.open(ws.root, [*ws.overrides, f"dream.cot.samples={samples}",
                                      f"dream.cot.max_new_tokens={tokens}"])
    ctx = PhaseContext(voting, cycle, load_inputs(voting, cycle), {})
    data = DREAM["cot-consistency"].data(ctx, load_version(voting, voting.registry.get_model(before_id),
                                                           inference=True))
    # quoted answers and figures left out, so that reasons of one kind count together
    reasons = Counter(re.sub(r"'[^']*'|\d+(?:\.\d+)?", "_", row.reason) for row in data.quarantined)
    return {"model": before_id, "samples": samples, "max_new_tokens": tokens, "metrics": data.metrics,
            "kept_examples": [e.to_json() for e in data.examples[:5]], "quarantine_reasons": dict(reasons.most_common())}


def markdown(result: dict) -> str:
    lines = ["# Counterfactual Dream and CoT voting (SmolLM2-135M-Instruct, demo knowledge)", ""]
    if cycle := result.get("cycle"):
        lines += [f"Cycle {cycle['cycle']}: {cycle['verdict']}; Dream kept: {cycle['dream_kept']} "
                  f"({'; '.join(cycle['dream_reasons'])}); phase wall s: {cycle['phase_wall_s']}", ""]
    if figures := result.get("counterfactual"):
        lines += ["| metric | before Dream | 95% CI | after Dream | 95% CI | after - before, 95% CI | items |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in figures.items():
            if not isinstance(row, dict) or "before" not in row:
                continue
            b, a, d = row["before"], row["after"], row["after_minus_before_ci95"]
            lines.append(f"| {name} | {b['mean']:.3f} | {b['low']:.3f}-{b['high']:.3f} | {a['mean']:.3f} | "
                         f"{a['low']:.3f}-{a['high']:.3f} | {d[0]:+.3f} to {d[1]:+.3f} | {b['n']} |")
        lines.append("")
    if cot := result.get("cot"):
        lines += [f"CoT voting by {cot['model']}: {cot['samples']} paths per question, at most {cot['max_new_tokens']} "
                  "tokens each", "", "| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in cot["metrics"].items()]
        lines += ["", f"Quarantine reasons: {json.dumps(cot['quarantine_reasons'])}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="cycle,counterfactual,cot")
    parser.add_argument("--cot-samples", type=int, default=5)
    parser.add_argument("--cot-tokens", type=int, default=160)
    parser.add_argument("--state", default="benchmarks/.cache/dreams_cf_cot")
    parser.add_argument("--out", default="benchmarks/results/dreams_cf_cot")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    quiet_libraries()
    ws = open_workspace(Path(args.state), args.overrides)
    partial = Path(args.state) / "partial.json"
    result = json.loads(partial.read_text()) if partial.is_file() else {}
    run_stages(result, partial, args.stages.split(","), {
        "cycle": lambda: cycle_stage(ws), "counterfactual": lambda: counterfactual_stage(ws),
        "cot": lambda: cot_stage(ws, args.cot_samples, args.cot_tokens)})
    result["machine"] = {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                         "torch": torch.__version__}
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
