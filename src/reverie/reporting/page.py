"""The dashboard page, live (served, data fetched from the server) or static (`reverie report`: data and chart
inlined, chat removed) — one template, so both show the same things."""

from __future__ import annotations

import base64
import json
from importlib import resources

from reverie.reporting.charts import pareto_png, trends_png
from reverie.reporting.overview import overview
from reverie.workspace import Workspace


def dashboard_html() -> str:
    """The live page: it fetches its data from the server."""
    return resources.files("reverie.reporting").joinpath("dashboard.html").read_text(encoding="utf-8")


def static_report(ws: Workspace) -> str:
    data = overview(ws)
    charts = {name: "data:image/png;base64," + base64.b64encode(draw(data)).decode()
              for name, draw in (("trends", trends_png), ("pareto", pareto_png))}
    inline = ("<script>window.REVERIE_DATA = " + json.dumps(data).replace("</", "<\\/")
              + ";\nwindow.REVERIE_CHARTS = " + json.dumps(charts) + ";</script>\n")
    return dashboard_html().replace("<script>\nconst params", inline + "<script>\nconst params", 1)
