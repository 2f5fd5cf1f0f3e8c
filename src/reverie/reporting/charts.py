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


def pareto_png(data: dict) -> bytes:
    """The last Compress's variants, quality against cost; the Pareto front joined, the kept variant starred."""
    variants = data["compress"]["variants"] if data["compress"] else []
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    front = sorted((v for v in variants if v["front"]), key=lambda v: v["seconds"])
    if front:
        axis.plot([v["seconds"] for v in front], [v["accuracy"] for v in front], color="#272", label="Pareto front")
    for variant in variants:
        axis.scatter(variant["seconds"], variant["accuracy"], marker="*" if variant["kept"] else "o", s=90,
                     color="#272" if variant["front"] else "#999", zorder=3)
        axis.annotate(variant["name"] + (" (kept)" if variant["kept"] else ""),
                      (variant["seconds"], variant["accuracy"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    axis.set_xlabel("seconds for a forward pass over the probe")
    axis.set_ylabel("probe accuracy")
    axis.set_ylim(-0.05, 1.05)
    axis.set_title(f"Compress of {data['compress']['cycle'][-6:]}: quality vs cost" if variants
                   else "no Compress variants yet")
    if front:
        axis.legend(fontsize=7, loc="lower right")
    return _png(figure)


def _png(figure: plt.Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
