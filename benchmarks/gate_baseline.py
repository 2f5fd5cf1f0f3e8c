"""Every Gate suite on the embedded default model (SmolLM2-135M-Instruct), with 95% confidence intervals and
wall time per suite, on the real benchmark data in ../shared/data; plus the refusal classifiers (string
match, and the same model as a yes/no judge) against the hand-labelled sample shipped with reverie.

    .venv/bin/python benchmarks/gate_baseline.py [--piqa 400] [--safety 100]

Safety suites score the held-out half of AdvBench and XSTest (the half that never becomes refusal pairs).
Results are stored in a workspace under --state, so a rerun (or a killed run) repeats no finished suite.
Writes benchmarks/results/gate_baseline.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml
from results_io import write_results

from reverie.cycle import ensure_release
from reverie.data.files import read_builtin
from reverie.engines.libraries import quiet_libraries
from reverie.engines.refusal import RefusalJudge, agreement, is_refusal
from reverie.engines.suites import SuiteRunner
from reverie.metrics import SUITES
from reverie.presets import preset_text
from reverie.workspace import Workspace

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def workspace(state: Path, piqa: int, safety: int) -> Workspace:
    config = yaml.safe_load(preset_text("default"))
    config["eval"] |= {
        "suites": list(SUITES), "general_suite": str(SHARED / "piqa" / "piqa_valid.jsonl"), "general_limit": piqa,
        "advbench": str(SHARED / "safety" / "advbench_harmful_behaviors.csv"),
        "xstest": str(SHARED / "safety" / "xstest_prompts.csv"), "safety_limit": safety,
    }
    if not (state / "reverie.yaml").exists():
        Workspace.init(state)
    (state / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Workspace.open(state)


def classifier_agreement(runner: SuiteRunner, ws: Workspace, model_id: str) -> dict:
    rows = [json.loads(line) for line in read_builtin("demo/refusal_labels.jsonl").splitlines()]
    labels = [r["refused"] for r in rows]
    matched = [is_refusal(r["response"]) for r in rows]
    loaded = runner.load(ws.registry.get_model(model_id))
    judged = RefusalJudge(loaded.model, loaded.tokenizer, ws.config.eval.batch_size)(
        [(r["prompt"], r["response"]) for r in rows])
    return {"string match vs labels": agreement(labels, matched), "judge vs labels": agreement(labels, judged),
            "string match vs judge": agreement(matched, judged)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--piqa", type=int, default=400, help="PIQA items for the general suite")
    parser.add_argument("--safety", type=int, default=100, help="held-out items per safety suite")
    parser.add_argument("--state", default="benchmarks/.cache/gate_baseline")
    parser.add_argument("--out", default="benchmarks/results/gate_baseline")
    args = parser.parse_args()
    quiet_libraries()
    ws = workspace(Path(args.state), args.piqa, args.safety)
    model_id = ensure_release(ws)
    runner = SuiteRunner(ws)
    started = time.time()
    reports = {name: runner.report(ws.registry.get_model(model_id), name) for name in SUITES}
    classifiers = classifier_agreement(runner, ws, model_id)

    rows, table = {}, ["| metric | mean | 95% CI | items | suite wall s |", "|---|---|---|---|---|"]
    for name, report in reports.items():
        for metric, interval in report.summary().items():
            rows[f"{name}.{metric}"] = {"mean": interval.mean, "ci95": [interval.low, interval.high], "n": interval.n,
                                        "suite_seconds": report.seconds}
            if "/" not in metric:
                table.append(f"| {name}.{metric} | {interval.mean:.3f} | {interval.low:.3f}-{interval.high:.3f} | "
                             f"{interval.n} | {report.seconds:.0f} |")
    table += ["", "Refusal classifiers on the hand-labelled sample (src/reverie/data/demo/refusal_labels.jsonl, "
              f"{int(classifiers['judge vs labels']['n'])} responses); judge = the same SmolLM2 asked yes/no:", "",
              "| pair | agreement | Cohen's kappa |", "|---|---|---|"]
    table += [f"| {pair} | {v['agreement']:.3f} | {v['kappa']:.3f} |" for pair, v in classifiers.items()]
    table += ["", f"PIQA: first {args.piqa} items; AdvBench and XSTest: up to {args.safety} held-out items each "
              "(XSTest unsafe and safe in turn); every other suite ships with reverie. Per-type and per-template "
              "figures are in the JSON."]
    result = {"settings": vars(args), "model": "SmolLM2-135M-Instruct (embedded)", "metrics": rows,
              "refusal_classifiers": classifiers, "wall_s": time.time() - started}
    write_results(args.out, result, "\n".join(table))


if __name__ == "__main__":
    main()
