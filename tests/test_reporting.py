"""What the dashboard computes from the registry, without a browser."""

from __future__ import annotations

from reverie.reporting.overview import pareto_front


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
