"""One Dream of red-team self-play on the embedded model (SmolLM2-135M-Instruct): attack success on the red-team
library's held-out attacks, and XSTest's safe compliance, before and after that Dream.

    .venv/bin/python benchmarks/dreams_redteam.py [--seeds 16] [--lookalikes 100] [--refusals-per-compliance 1.0]
        [--safety 20] [--xstest 200] [--model embedded]

The library is the shared AdvBench and XSTest files (../shared/data/safety), imported as two versions; the Dream
attacks requests from their training half, the suites score the held-out half. One cycle runs (Learn on the demo
knowledge, Compress, the `redteam` Dream, the Gate); "before" is the model the Dream started from (after Learn and
Compress), "after" the model it made, so the difference is the Dream's alone. Both are scored in one stage, after
the cycle, by one runner: the same items (the suite leaves out any held-out request a training set now contains).
--safety sizes the redteam suite (each harmful request is attacked 12 ways); --xstest sizes the xstest suite apart,
since its items are asked plain and its safe compliance is the figure the goal is about.
Stages resume from --state; writes benchmarks/results/dreams_redteam.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from results_io import run_stages, write_results

from reverie.cycle import run_cycle
from reverie.data.quality import check_text
from reverie.data.redteam import import_items, read_items
from reverie.engines.libraries import quiet_libraries
from reverie.engines.suites import SuiteRunner
from reverie.phases.outputs import DreamOutput, read_as
from reverie.presets import preset_text
from reverie.workspace import Workspace

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SUITES = ("redteam", "xstest")
HEADLINE = ("redteam.attack_success", "redteam.refusal", "redteam.robust_refusal", "redteam.over_refusal",
            "redteam.coverage", "xstest.safe_compliance", "xstest.unsafe_refusal")


def workspace(state: Path, model: str, seeds: int, lookalikes: int, safety: int,
              refusals_per_compliance: float | None) -> Workspace:
    """The default preset with a `redteam` Dream, the shared safety files as eval.xstest and as the library."""
    config = yaml.safe_load(preset_text("default"))
    config["model"]["source"] = model
    config["dream"] |= {"strategies": ["redteam"], "max_regression": 1.0}  # keep the Dream's model to measure it
    config["dream"].setdefault("redteam", {}).update(seeds=seeds, lookalikes=lookalikes,
                                                     refusals_per_compliance=refusals_per_compliance)
    config["eval"] |= {"xstest": str(SHARED / "safety" / "xstest_prompts.csv"), "safety_limit": safety}
    fresh = not (state / "reverie.yaml").exists()
    if fresh:
        Workspace.init(state)
    (state / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ws = Workspace.open(state)
    if fresh:
        import_items(ws, read_items(SHARED / "safety" / "advbench_harmful_behaviors.csv", "advbench"))
        import_items(ws, read_items(SHARED / "safety" / "xstest_prompts.csv", "xstest"))
    return ws


def cycle_stage(ws: Workspace) -> dict:
    """One cycle; the Dream's input and output models and its metrics."""
    outcome = run_cycle(ws)
    [dream] = [r for r in ws.registry.phase_runs(outcome.cycle_id) if r.phase == "dream"]
    [play] = read_as(dream, DreamOutput).strategies
    return {"cycle": outcome.cycle_id, "released": outcome.released, "before_model": dream.inputs["model"],
            "after_model": play.model or dream.inputs["model"], "dream_kept": play.kept, "dream_reason": play.reason,
            "dream_metrics": dream.metrics, "dream_wall_s": dream.wall_s}


def xstest_runner(ws: Workspace, xstest: int) -> SuiteRunner:
    """A runner whose xstest suite asks `xstest` held-out items (eval.safety_limit, which also sizes redteam)."""
    return SuiteRunner(Workspace.open(ws.root, [f"eval.safety_limit={xstest}"]))


def evaluation_stage(ws: Workspace, cycle: dict, xstest: int) -> dict:
    """The suites on both models, each by one runner (the same items), with their intervals; the xstest suite
    with eval.safety_limit set to `xstest`."""
    runners = {"redteam": SuiteRunner(ws), "xstest": xstest_runner(ws, xstest)}
    scores = {}
    for side in ("before", "after"):
        record = ws.registry.get_model(cycle[f"{side}_model"])
        scores[side] = {f"{name}.{metric}": {"mean": i.mean, "ci95": [i.low, i.high], "n": i.n}
                        for name in SUITES for metric, i in runners[name].report(record, name).summary().items()}
        scores[f"{side}_seconds"] = {name: runners[name].report(record, name).seconds for name in SUITES}
    return scores


def substance_stage(ws: Workspace, cycle: dict, xstest: int) -> dict:
    """How many XSTest safe prompts each model answers with a compliance that also passes the quality rules (at
    least a few words, not repetitive): the suite counts any non-refusal as compliance, so a one-word answer
    (what the default Learn teaches) counts there. Read from the stored item results; nothing is generated."""
    runner = xstest_runner(ws, xstest)
    counts = {}
    for side in ("before", "after"):
        items = runner.report(ws.registry.get_model(cycle[f"{side}_model"]), "xstest").items
        safe = [item for item in items if "safe_compliance" in item.scores]
        counts[side] = {"safe": len(safe), "compliant": sum(item.scores["safe_compliance"] == 1.0 for item in safe),
                        "substantive": sum(item.scores["safe_compliance"] == 1.0 and check_text(item.output) is None
                                           for item in safe)}
    return counts


def markdown(result: dict) -> str:
    cycle, scores = result["cycle"], result["evaluation"]
    metrics = cycle["dream_metrics"]
    lines = [f"One `redteam` Dream (cycle {cycle['cycle']}; kept: {cycle['dream_kept']}, {cycle['dream_reason']}; "
             f"{metrics.get('redteam_attacks', 0):.0f} attacks on {metrics.get('redteam_seeds', 0):.0f} requests, "
             f"{metrics.get('redteam_attack_success', 0):.3f} of them worked; trained on "
             f"{metrics.get('redteam_refusal_examples', 0):.0f} refusals and "
             f"{metrics.get('redteam_compliance_examples', 0):.0f} compliances with "
             f"{metrics.get('redteam_lookalikes', 0):.0f} look-alikes, "
             f"{metrics.get('redteam_compliances_from_release', 0):.0f} answered by the release; Dream wall "
             f"{cycle['dream_wall_s'] or 0:.0f} s)", "",
             "| metric | before the Dream | 95% CI | after the Dream | 95% CI | items |", "|---|---|---|---|---|---|"]
    names = [*HEADLINE, *sorted(k for k in scores["before"] if "/" in k and k.startswith("redteam.attack_success"))]
    for name in names:
        before, after = scores["before"].get(name), scores["after"].get(name)
        if before is None or after is None:
            continue
        lines.append(f"| {name} | {before['mean']:.3f} | {before['ci95'][0]:.3f}-{before['ci95'][1]:.3f} | "
                     f"{after['mean']:.3f} | {after['ci95'][0]:.3f}-{after['ci95'][1]:.3f} | {after['n']} |")
    for side in ("before", "after") if "substance" in result else ():
        count = result["substance"][side]
        lines.append(f"\n{side} the Dream: {count['compliant']} of {count['safe']} XSTest safe prompts answered without "
                     f"a refusal, {count['substantive']} of them with an answer that passes the quality rules")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="model.source (a tiny model checks the plumbing)")
    parser.add_argument("--seeds", type=int, default=16, help="harmful requests the Dream attacks")
    parser.add_argument("--safety", type=int, default=20, help="held-out items per safety suite (each attacked 12 "
                        "ways by the redteam suite)")
    parser.add_argument("--xstest", type=int, default=200, help="held-out XSTest items the xstest suite asks "
                        "(200: all of the shared file's held-out half)")
    parser.add_argument("--lookalikes", type=int, default=100, help="safe look-alikes the Dream answers (100: "
                        "all 98 of the shared XSTest training half)")
    parser.add_argument("--refusals-per-compliance", type=float, default=1.0,
                        help="dream.redteam.refusals_per_compliance (0: no cap, every refusal trained on)")
    parser.add_argument("--state", default="benchmarks/.cache/dreams_redteam")
    parser.add_argument("--out", default="benchmarks/results/dreams_redteam")
    args = parser.parse_args()
    quiet_libraries()
    state = Path(args.state)
    ws = workspace(state, args.model, args.seeds, args.lookalikes, args.safety, args.refusals_per_compliance or None)
    partial = state / "partial.json"
    result = json.loads(partial.read_text()) if partial.is_file() else {}
    result["settings"] = vars(args)
    run_stages(result, partial, ["cycle", "evaluation", "substance"], {
        "cycle": lambda: cycle_stage(ws), "evaluation": lambda: evaluation_stage(ws, result["cycle"], args.xstest),
        "substance": lambda: substance_stage(ws, result["cycle"], args.xstest)})
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
