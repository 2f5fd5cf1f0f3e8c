"""Run one sleep cycle on the embedded SmolLM2 and the demo knowledge in a fresh workspace, and report
closed-book accuracy before and after, the general check, and wall time per phase.

    .venv/bin/python benchmarks/demo_cycle.py [--out benchmarks/results/demo_cycle] [--set KEY=VALUE ...]

Writes <out>.json and <out>.md. Both columns are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from reverie.cycle import run_cycle
from reverie.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/demo_cycle")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    hf_logging.set_verbosity_error()

    with tempfile.TemporaryDirectory() as tmp:
        Workspace.init(Path(tmp))
        workspace = Workspace.open(Path(tmp), args.overrides)
        started = time.time()
        outcome = run_cycle(workspace)
        total = time.time() - started
        phases = {r.phase: round(r.wall_s or 0.0, 1) for r in workspace.registry.phase_runs(outcome.cycle_id)}
        runs = {r.phase: r for r in workspace.registry.phase_runs(outcome.cycle_id)}
        dream = runs["dream"].metrics
        # Compress measures the Learn model on the eval questions in its A/B check: what Learn alone reached.
        after_learn = runs["compress"].metrics.get("adapter_accuracy")

    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "overrides": args.overrides,
        "verdict": "released" if outcome.released else "rejected",
        "reasons": outcome.reasons,
        "before": outcome.reference_scores,
        "after_learn_knowledge_accuracy": after_learn,
        "after": outcome.candidate_scores,
        "dream": dream,
        "phase_wall_s": phases,
        "cycle_wall_s": round(total, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    shown = [k for k in outcome.candidate_scores if "/" not in k]
    lines = ["| metric | before (base) | after (candidate) |", "|---|---|---|"]
    lines += [f"| {k} | {outcome.reference_scores[k]:.3f} | {outcome.candidate_scores[k]:.3f} |" for k in shown]
    if after_learn is not None:
        lines += ["", f"Closed-book accuracy after Learn alone (before Dream): {after_learn:.3f}."]
    if "dream_self_edit_items" in dream:
        trained = "trained" if dream["dream_generator_trained"] else "untrained: the release"
        lines += ["", f"Dream (SEAL, generator {trained}): {dream['dream_self_edit_items']:.0f} self-edit items "
                  f"trained on, {dream['dream_items_quarantined']:.0f} quarantined by the quality gate."]
    lines += ["", f"Verdict: {result['verdict']}. Cycle wall time {total:.0f} s "
              f"({', '.join(f'{p} {s:.0f} s' for p, s in phases.items())})."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
