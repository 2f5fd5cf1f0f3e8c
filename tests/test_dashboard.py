"""The dashboard in a real headless Chromium (Debian's `chromium`), and the static report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reverie.workspace import Workspace

from conftest import reverie

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.mark.serve_args("--api-key", "k3y")
def test_page_chat_and_thumbs_down_reach_the_next_cycle(server, browser, workspace_dir: Path,
                                                        tmp_path: Path) -> None:
    url, process = server
    page = browser.new_page()
    assert page.goto(f"{url}/").status == 401  # the page too needs the key
    page.goto(f"{url}/?key=k3y")
    release = Workspace.open(workspace_dir).registry.get_alias()
    page.wait_for_function(f"document.getElementById('release').textContent.includes('{release}')")
    page.wait_for_function("document.getElementById('trends').naturalWidth > 0")  # the charts loaded
    page.wait_for_function("document.getElementById('pareto').naturalWidth > 0")
    page.fill("#chat-input", "What is the capital of Velmora?")
    page.click("#chat-send")
    page.wait_for_selector(".thumbs-down")
    page.fill(".correction", "The capital of Velmora is Quistrand.")
    page.click(".thumbs-down")
    page.wait_for_function("document.querySelector('.feedback-status').textContent === 'stored for the next sleep'")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    process.terminate()
    process.wait(timeout=30)

    ws = str(workspace_dir)
    reverie("cycle", "-w", ws, "--set", "dream.enabled=false", "--set", "learn.replay_share=0.5")
    lineage = reverie("lineage", "release", "-w", ws).stdout
    assert "/feedback" in lineage and "1 trained on" in lineage

    (workspace_dir / "rhythms").mkdir()
    (workspace_dir / "rhythms" / "nightly.yaml").write_text(
        'description: "memory only"\nslots:\n  refresh:\n    schedule: {at: "02:00"}\n'
        "    memory: [refresh-memory]\n    changes: memory\n")
    for now in ("2026-01-05T01:00", "2026-01-05T02:30"):  # the first run starts the rhythm, the second runs it
        reverie("rhythm", "run", "nightly", "-w", ws, "--now", now)

    report = tmp_path / "report.html"
    reverie("report", str(report), "-w", ws)
    static = browser.new_page()
    static.goto(report.as_uri())
    new_release = Workspace.open(workspace_dir).registry.get_alias()
    static.wait_for_function(f"document.getElementById('release').textContent.includes('{new_release}')")
    assert static.query_selector("#chat") is None  # a report has no server to chat with
    assert "/feedback" in static.inner_text("#lineage")
    [rhythm_run] = static.inner_text("#rhythm-runs").splitlines()[1:]
    assert "\tnightly/refresh\t" in rhythm_run and "\tfinished\t" in rhythm_run  # ran at, rhythm/slot, due, status
    assert static.evaluate("document.getElementById('trends').naturalWidth") > 0
    assert static.evaluate("document.getElementById('pareto').naturalWidth") > 0
    header, *variants = [line.split("\t") for line in static.inner_text("#variants").splitlines()]
    kept = header.index("kept")  # the last Compress: the merge and what it was measured against, the merge kept
    assert len(variants) >= 2 and [variant[0] for variant in variants if variant[kept] == "yes"] == ["merged"]
