"""The demo cycle on the embedded SmolLM2 with each generation runtime, one after the other in one process:
model.runtime transformers (float32 `generate`) and llama.cpp (an f16 GGUF per version), each in a fresh
workspace made from the demo preset, and the wall time of every phase with the ratio between them. The Gate's
suites and Dream's sampling are what the runtime changes; Learn trains in torch either way.

    .venv/bin/python benchmarks/runtime_cycle.py [--out benchmarks/results/runtime_cycle]

Writes <out>.json and <out>.md; a killed run resumes from <out>.partial.json (one stage per runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from results_io import run_stages, write_results

from reverie.cycle import run_cycle
from reverie.workspace import Workspace

RUNTIMES = ("transformers", "llama.cpp")
PHASES = ("learn", "compress", "dream", "gate")


def cycle(runtime: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        Workspace.init(Path(tmp), preset="demo")
        workspace = Workspace.open(Path(tmp), [f"model.runtime={runtime}"])
        started = time.perf_counter()
        outcome = run_cycle(workspace)
        total = time.perf_counter() - started
        phases = {r.phase: r.wall_s or 0.0 for r in workspace.registry.phase_runs(outcome.cycle_id)}
    return {"cycle_s": total, "phase_s": phases, "released": outcome.released,
            "candidate": outcome.candidate_scores, "reference": outcome.reference_scores}


def markdown(result: dict) -> str:
    base, fast = result["transformers"], result["llama.cpp"]
    lines = ["| phase | transformers s | llama.cpp s | ratio |", "|---|---|---|---|"]
    for phase in PHASES:
        a, b = base["phase_s"].get(phase, 0.0), fast["phase_s"].get(phase, 0.0)
        lines.append(f"| {phase} | {a:.0f} | {b:.0f} | {a / b:.2f}x |" if b else f"| {phase} | {a:.0f} | {b:.0f} | - |")
    lines.append(f"| whole cycle | {base['cycle_s']:.0f} | {fast['cycle_s']:.0f} | "
                 f"{base['cycle_s'] / fast['cycle_s']:.2f}x |")
    shown = [k for k in base["candidate"] if "/" not in k]
    lines += ["", "| Gate metric (candidate) | transformers | llama.cpp |", "|---|---|---|"]
    lines += [f"| {k} | {base['candidate'][k]:.3f} | {fast['candidate'].get(k, float('nan')):.3f} |" for k in shown]
    lines += ["", f"Verdicts: transformers {'released' if base['released'] else 'rejected'}, llama.cpp "
              f"{'released' if fast['released'] else 'rejected'}. {result['machine']}; load average "
              f"{result['load_average']} at the start. The two cycles ran one after the other in one process."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "runtime_cycle"))
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    partial = Path(args.out).with_suffix(".partial.json")
    result: dict = json.loads(partial.read_text()) if partial.is_file() else {}
    result.setdefault("load_average", ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    run_stages(result, partial, list(RUNTIMES), {r: (lambda r=r: cycle(r)) for r in RUNTIMES})
    write_results(args.out, result, markdown(result))
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
