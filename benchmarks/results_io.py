"""Where every benchmark writes: <out>.json (all figures and settings) and <out>.md (the table), then prints it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path


def write_results(out: str, result: dict, markdown: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown.rstrip("\n") + "\n")
    print(markdown)


def run_stages(result: dict, partial: Path, names: list[str], stages: dict[str, Callable[[], dict]]) -> None:
    """Run the named stages in order into `result`, skipping those it holds already, and save it to `partial`
    after each one, so that a killed benchmark resumes where it stopped."""
    for name in names:
        if name in result:
            print(f"{name}: done already", file=sys.stderr)
            continue
        start = time.perf_counter()
        print(f"{name}: running", file=sys.stderr)
        result[name] = stages[name]() | {"stage_seconds": time.perf_counter() - start}
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(result, indent=2) + "\n")
