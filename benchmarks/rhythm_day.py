"""A simulated day of the `daily` rhythm on the embedded model, the way a user watches it:

    .venv/bin/python benchmarks/rhythm_day.py [--preset demo] [--speed 3600]

Initialises a workspace (--state, from --preset), then runs `reverie rhythm serve daily --speed S --start
<a Monday 01:00> --hours 6` as a subprocess (refresh at 02:00, replay-dream at 03:00, quick-gate at 05:00) and
`reverie history`. Writes benchmarks/results/rhythm_day.{json,md}: each slot's status, detail and wall seconds,
the release before and after, and the output of both commands. A rerun starts from a fresh workspace.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results_io import write_results

from reverie.workspace import Workspace

START = "2026-01-05T01:00"  # a Monday, an hour before the first slot


def reverie(*args: str) -> tuple[str, float]:
    """Run the CLI; its output (stdout and stderr together) and wall seconds. A failure stops the benchmark."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "reverie", *args], capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        sys.exit(f"reverie {' '.join(args)} failed ({done.returncode}):\n{output}")
    return output, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", help="workspace preset (demo: the embedded model, demo knowledge)")
    parser.add_argument("--speed", type=float, default=3600.0, help="simulated seconds per wall second")
    parser.add_argument("--state", default="benchmarks/.cache/rhythm_day")
    parser.add_argument("--out", default="benchmarks/results/rhythm_day")
    args = parser.parse_args()
    state = Path(args.state)
    shutil.rmtree(state, ignore_errors=True)
    reverie("init", str(state), "--preset", args.preset)
    release_before = Workspace.open(state).registry.get_alias()
    serve_output, serve_seconds = reverie("rhythm", "serve", "daily", "-w", str(state), "--speed", str(args.speed),
                                          "--start", START, "--hours", "6")
    history, _ = reverie("history", "-w", str(state))
    registry = Workspace.open(state).registry
    runs = [{"slot": r.slot, "status": r.status, "detail": r.detail, "cycle": r.cycle_id,
             "wall_s": round((r.finished_at or r.started_at) - r.started_at, 1)} for r in registry.rhythm_runs("daily")]
    result = {"settings": vars(args), "machine": f"{platform.machine()}, {platform.python_version()}",
              "release_before": release_before, "release_after": registry.get_alias(), "runs": runs,
              "serve_wall_s": round(serve_seconds, 1), "serve_output": serve_output, "history": history}
    shown = "\n".join(line for line in serve_output.splitlines() if "it/s]" not in line and line.strip())  # no tqdm
    rows = "\n".join(f"| {r['slot']} | {r['status']} | {r['wall_s']} | {r['detail']} |" for r in runs)
    markdown = (f"# A simulated day of the daily rhythm (preset {args.preset}, {args.speed:g}x, from {START})\n\n"
                f"| slot | status | wall s | detail |\n|---|---|---|---|\n{rows}\n\n"
                f"Release before: {release_before or 'none yet (the first cycle bootstraps it)'}; after: "
                f"{registry.get_alias()}. `rhythm serve` took "
                f"{serve_seconds:.0f} s of wall time for 6 simulated hours (the clock stands still while a slot "
                f"works).\n\n```\n{shown}\n```\n\n```\n{history.strip()}\n```\n")
    write_results(args.out, result, markdown)


if __name__ == "__main__":
    main()
