"""Where every benchmark writes: <out>.json (all figures and settings) and <out>.md (the table), then prints it."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: str, result: dict, markdown: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown.rstrip("\n") + "\n")
    print(markdown)
