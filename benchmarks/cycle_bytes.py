"""What a cycle costs in bytes, and what `reverie gc` gives back: a fresh workspace runs a released cycle, then one
the Gate rejects (a knowledge floor of 1.0), and the workspace's bytes are measured by kind before and after each;
then gc runs with --keep-candidates 0 and the bytes are measured again.

    .venv/bin/python benchmarks/cycle_bytes.py [--model tiny|embedded] [--set KEY=VALUE ...] [--out PATH]

tiny (default): the tests' 2-layer random Llama (tests/conftest.py) on the tiny preset, seconds per cycle; embedded:
SmolLM2-135M-Instruct on the demo preset (tens of minutes per cycle on a 2-core CPU). Kinds: weights and adapters
(artifacts the models point at), datasets and cycle inputs (artifacts the datasets and cycles point at), other
artifacts (what phase runs point at besides these), caches (.reverie/cache: GGUF conversions, runtime copies),
registry (the SQLite files, write-ahead log checkpointed), cards, eval items (each Gate answer per model, behind the
cards' scores), other state (memory, locks). Writes benchmarks/results/cycle_bytes.{json,md} (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from results_io import write_results

from reverie.cycle import run_cycle
from reverie.retention import collect, size_of
from reverie.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
KINDS = ("weights", "adapters", "datasets", "cycle inputs", "other artifacts", "caches", "registry", "cards",
         "eval items", "other state")
REJECT = ["gate.capability.knowledge.accuracy=1.0"]  # a perfect-recall floor: the Gate rejects the candidate


def bytes_by_kind(workspace: Workspace) -> dict[str, int]:
    """The workspace's bytes, each artifact counted once under the first kind that claims it."""
    registry, store = workspace.registry, workspace.artifacts
    claims: dict[str, str] = {}
    for model in registry.list_models():
        if model.status != "removed":
            claims.setdefault(model.weights or "", "weights")
            for adapter in (model.adapter, *model.stack):
                claims.setdefault(adapter or "", "adapters")
    for dataset in registry.list_datasets():
        claims.setdefault(dataset.hash, "datasets")
    for cycle in registry.list_cycles():
        claims.setdefault(cycle.inputs or "", "cycle inputs")
    sizes = dict.fromkeys(KINDS, 0)
    for artifact in store.all_hashes():
        sizes[claims.get(artifact, "other artifacts")] += size_of(store.root / artifact)
    state = workspace.state
    with sqlite3.connect(state / "registry.sqlite") as conn:  # the write-ahead log into the file: a stable size
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    sizes["caches"] = size_of(workspace.cache_dir) if workspace.cache_dir.exists() else 0
    sizes["registry"] = sum(size_of(p) for p in state.glob("registry.sqlite*"))
    sizes["cards"] = size_of(workspace.cards_dir) if workspace.cards_dir.exists() else 0
    sizes["eval items"] = size_of(state / "evals") if (state / "evals").exists() else 0
    sizes["other state"] = size_of(state) - sum(sizes.values())
    return sizes


def tiny_model(cache: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model

    target = cache / "tiny-llama"
    return target if (target / "config.json").is_file() else build_tiny_model(target)


def new_workspace(model: str, root: Path) -> None:
    if model == "embedded":
        Workspace.init(root, preset="demo")
        return
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_workspace

    make_workspace(root, tiny_model(REPO / "benchmarks" / ".cache"))


def measure(model: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        new_workspace(model, root)
        stages = [{"stage": "before", "bytes": bytes_by_kind(Workspace.open(root, overrides))}]
        for name, extra in (("released cycle", []), ("rejected cycle", REJECT)):
            workspace = Workspace.open(root, overrides + extra)
            started = time.perf_counter()
            outcome = run_cycle(workspace)
            stages.append({"stage": name, "outcome": "released" if outcome.released else "rejected",
                           "seconds": time.perf_counter() - started, "bytes": bytes_by_kind(workspace)})
            workspace.registry.close()
        workspace = Workspace.open(root, overrides)
        removal = collect(workspace, keep_candidates=0)
        stages.append({"stage": "after gc --keep-candidates 0", "bytes": bytes_by_kind(workspace)})
        return {"stages": stages, "gc": {"models_removed": removal.models, "bytes_freed": removal.bytes_freed,
                                         "artifacts": removal.artifacts, "caches": removal.caches}}


def megabytes(size: int) -> str:
    return f"{size / 1e6:.2f}"


def markdown(result: dict) -> str:
    stages = result["stages"]
    lines = [f"# What a cycle costs in bytes ({result['model']}; {result['machine']})", "",
             "| kind (MB) | " + " | ".join(s["stage"] for s in stages) + " |",
             "|---|" + "---|" * len(stages)]
    for kind in KINDS:
        lines.append(f"| {kind} | " + " | ".join(megabytes(s["bytes"][kind]) for s in stages) + " |")
    lines.append("| **total** | " + " | ".join(f"**{megabytes(sum(s['bytes'].values()))}**" for s in stages) + " |")
    totals = [sum(s["bytes"].values()) for s in stages]
    lines += [""] + [f"- {s['stage']}: {s['outcome']} in {s['seconds']:.0f} s, stored "
                     f"{megabytes(totals[i + 1] - totals[i])} MB" for i, s in enumerate(stages[1:-1])]
    gc = result["gc"]
    lines.append(f"- gc --keep-candidates 0 removed {len(gc['models_removed'])} candidate version(s) and freed "
                 f"{megabytes(gc['bytes_freed'])} MB ({len(gc['artifacts'])} artifact(s), {len(gc['caches'])} cache "
                 "path(s)); the releases, their lineage and every dataset stayed.")
    lines += ["", f"Overrides: {', '.join(result['overrides']) or 'none'}. Load average {result['load_average']} at "
              "the start."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "embedded"), default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cycle_bytes"))
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    result = {"model": args.model, "overrides": args.overrides, "load_average": load,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores"} | measure(args.model, args.overrides)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
