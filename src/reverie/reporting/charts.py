"""Charts as PNG bytes (matplotlib, no display): the same images in the dashboard and the static report."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

TREND_METRICS = ("knowledge.accuracy", "general.accuracy", "advbench.refusal", "xstest.safe_compliance")


def trends_png(data: dict) -> bytes:
    """Each key metric of every gated candidate, cycle by cycle; released cycles are filled markers."""
    cycles = [c for c in data["cycles"] if c["scores"]]
    figure, axis = plt.subplots(figsize=(7, 3.2), dpi=100)
    for metric in TREND_METRICS:
        points = [(i, c["scores"][metric], c["outcome"] == "released") for i, c in enumerate(cycles)
                  if metric in c["scores"]]
        if not points:
            continue
        xs, ys, released = zip(*points)
        line = axis.plot(xs, ys, label=metric)[0]
        axis.scatter([x for x, r in zip(xs, released) if not r], [y for y, r in zip(ys, released) if not r],
                     facecolors="white", edgecolors=line.get_color(), zorder=3)
    axis.set_xticks(range(len(cycles)), [c["id"][-6:] for c in cycles], rotation=30, fontsize=7)
    axis.set_ylim(-0.05, 1.05)
    axis.set_ylabel("score")
    axis.set_title("Gate metrics per cycle (hollow: rejected)" if cycles else "no gated cycle yet")
    if cycles:
        axis.legend(fontsize=7, loc="lower left")
    return _png(figure)


LOG_SPREAD = 20  # the cost axis turns logarithmic when its largest value is this many times its smallest


def pareto_png(data: dict) -> bytes:
    """The last Compress's variants, probe accuracy against seconds per decoded token (batch 1): the Pareto front
    joined, kept variants starred, the others grey. Variants recorded before decode timing show their old cost,
    seconds for a forward pass over the probe, and the axis says so."""
    variants = data["compress"]["variants"] if data["compress"] else []
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=100)
    front = sorted((v for v in variants if v["front"]), key=lambda v: v["seconds"])
    if front:
        axis.plot([v["seconds"] for v in front], [v["accuracy"] for v in front], color="#272", zorder=2)
    for variant in variants:
        kept = variant["kept"]
        axis.scatter(variant["seconds"], variant["accuracy"], marker="*" if kept else "o", s=160 if kept else 50,
                     color="#272" if kept else "#999", zorder=3)
        axis.annotate(variant["name"] + (" (kept)" if kept else ""), (variant["seconds"], variant["accuracy"]),
                      textcoords="offset points", xytext=(6, 6), fontsize=8, color="#222" if kept else "#777")
    axis.margins(x=0.15)  # room for the names beside the outermost points
    costs = [v["seconds"] for v in variants if v["seconds"] > 0]
    if costs and max(costs) > LOG_SPREAD * min(costs):
        axis.set_xscale("log")
    decoded = bool(variants) and all("seconds_per_token" in v.get("cost", {}) for v in variants)
    axis.set_xlabel("seconds per decoded token (batch 1)" if decoded or not variants
                    else "seconds for a forward pass over the probe (recorded before decode timing)")
    axis.set_ylabel("probe accuracy")
    axis.set_ylim(-0.05, 1.05)
    # no legend: at accuracy 0 (a fresh model on new questions) it would hide points in any lower corner
    axis.set_title(f"Compress of {data['compress']['cycle'][-6:]}: quality vs cost\n(line: the Pareto front; star: "
                   "kept; grey: not kept)" if variants else "no Compress variants yet", fontsize=10)
    return _png(figure)


def _png(figure: plt.Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
