"""What the dashboard computes from the registry, without a browser."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from reverie.cycle import run_cycle
from reverie.phases.outputs import CompressOutput, read_as
from reverie.reporting.overview import overview, pareto_front
from reverie.reporting.page import static_report
from reverie.workspace import Workspace


def test_pareto_front_keeps_the_variants_nothing_beats_on_both_quality_and_cost() -> None:
    variants = [
        {"name": "adapter", "accuracy": 0.80, "seconds": 12.0},
        {"name": "merged", "accuracy": 0.80, "seconds": 9.0},  # as good and faster: beats adapter
        {"name": "int8", "accuracy": 0.70, "seconds": 5.0},  # faster but worse: a trade-off, on the front
        {"name": "pruned", "accuracy": 0.60, "seconds": 6.0},  # worse and slower than int8
    ]
    front = {v["name"]: v["front"] for v in pareto_front(variants)}
    assert front == {"adapter": False, "merged": True, "int8": True, "pruned": False}
    tie = [{"name": "a", "accuracy": 0.5, "seconds": 1.0}, {"name": "b", "accuracy": 0.5, "seconds": 1.0}]
    assert all(v["front"] for v in pareto_front(tie))  # equal points do not beat each other


def test_static_report_carries_both_charts_and_the_compress_variants(workspace_dir: Path) -> None:
    workspace = Workspace.open(workspace_dir)
    run_cycle(workspace)
    data = overview(workspace)
    variants = {v["name"]: v for v in data["compress"]["variants"]}
    assert len(variants) >= 2 and [name for name, v in variants.items() if v["kept"]] == ["merged"]
    [compress] = [r for r in workspace.registry.phase_runs(data["compress"]["cycle"]) if r.phase == "compress"]
    recorded = {v.name: v.model_dump() for v in read_as(compress, CompressOutput).variants()}
    filled = ("front", "strategy", "reason")  # the overview adds the front, and what an old record lacks
    assert ({name: {k: x for k, x in v.items() if k not in filled} for name, v in variants.items()}
            == {name: {k: x for k, x in v.items() if k not in filled} for name, v in recorded.items()})
    assert all(v["strategy"] == "merge" for v in variants.values())
    html = static_report(workspace)
    charts = json.loads(html.split("window.REVERIE_CHARTS = ", 1)[1].split(";</script>", 1)[0])
    for name in ("trends", "pareto"):
        assert base64.b64decode(charts[name].removeprefix("data:image/png;base64,"))[:8] == b"\x89PNG\r\n\x1a\n"
