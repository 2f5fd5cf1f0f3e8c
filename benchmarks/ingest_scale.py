"""Streaming ingest at scale: wall time and peak memory of `reverie data ingest` inline and on datatrove's local
executor, at two input sizes, in one run.

    .venv/bin/python benchmarks/ingest_scale.py [--rows 25000 100000] [--tasks 2]

Input: JSONL rows of three sentences each, drawn from ../shared/data (the dedup benchmark's corpus), with 5%
exact repeats, so every step has work. Each ingest runs in its own fresh process into a fresh workspace and
reports its wall time and the peak resident memory of that process and, for the local executor, of its worker
processes. Memory that grows much more slowly than the input shows the rows stream: what stays is the dedup
index (an id and a MinHash signature per kept row), not the text.

Writes benchmarks/results/ingest_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dedup import corpus_texts
from results_io import write_results

REPEAT_SHARE = 0.05


def write_input(path: Path, rows: int, seed: int = 0) -> None:
    texts = corpus_texts()
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(rows):
        if lines and rng.random() < REPEAT_SHARE:
            lines.append(rng.choice(lines))
        else:
            lines.append(json.dumps({"text": " ".join(rng.sample(texts, 3))}))
    path.write_text("\n".join(lines) + "\n")


def child(args: argparse.Namespace) -> None:
    """One ingest in this process; prints its figures as one JSON line."""
    from reverie.data.pool import ingest_path
    from reverie.workspace import Workspace

    root = Path(args.workspace)
    Workspace.init(root)
    config = yaml.safe_load((root / "reverie.yaml").read_text())
    config.setdefault("data", {}).update(executor=args.executor, executor_tasks=args.tasks,
                                         executor_workers=args.tasks)
    (root / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ws = Workspace.open(root)
    start = time.perf_counter()
    dataset, summary = ingest_path(ws, Path(args.input), "team", "general", name="scale")
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "kept": summary.kept, "rows_in": summary.steps[0].rows_in,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def run_one(input_path: Path, executor: str, tasks: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ingest-scale-") as folder:
        out = subprocess.run([sys.executable, __file__, "--child", "--executor", executor, "--tasks", str(tasks),
                              "--input", str(input_path), "--workspace", str(Path(folder) / "ws")],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("--tasks", type=int, default=2, help="shards (and local workers) for the datatrove run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ingest_scale"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--executor", default="inline", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="ingest-input-") as folder:
        for rows in args.rows:
            path = Path(folder) / f"rows-{rows}.jsonl"
            write_input(path, rows)
            megabytes = path.stat().st_size / 2**20
            for executor in ("inline", "local"):
                print(f"{rows} rows ({megabytes:.0f} MB), {executor}", file=sys.stderr)
                runs.append({"rows": rows, "input_mb": megabytes, "executor": executor, "tasks": args.tasks,
                             **run_one(path, executor, args.tasks)})
    lines = ["| rows | input MB | executor | seconds | rows/s | peak RSS MB (main) | peak RSS MB (a worker) | kept |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        executor = run["executor"] + (f" ({run['tasks']} shards)" if run["executor"] != "inline" else "")
        workers = f"{run['workers_peak_rss_mb']:.0f}" if run["executor"] != "inline" else "-"
        lines.append(f"| {run['rows']} | {run['input_mb']:.0f} | {executor} | {run['seconds']:.1f} | "
                     f"{run['rows_in'] / run['seconds']:.0f} | {run['peak_rss_mb']:.0f} | {workers} | {run['kept']} |")
    by = {(r["rows"], r["executor"]): r for r in runs}
    small, large = min(args.rows), max(args.rows)
    notes = []
    for executor in ("inline", "local"):
        growth = by[(large, executor)]["peak_rss_mb"] - by[(small, executor)]["peak_rss_mb"]
        input_growth = by[(large, executor)]["input_mb"] - by[(small, executor)]["input_mb"]
        notes.append(f"{executor}: peak memory grew {growth:.0f} MB for {input_growth:.0f} MB more input "
                     f"({growth * 2**20 / (large - small):.0f} bytes per extra row)")
    for rows in args.rows:
        notes.append(f"{rows} rows: local / inline wall time {by[(rows, 'local')]['seconds'] / by[(rows, 'inline')]['seconds']:.2f}")
    markdown = "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes)
    write_results(args.out, {"runs": runs, "notes": notes}, markdown)


if __name__ == "__main__":
    main()
