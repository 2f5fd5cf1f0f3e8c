"""Canary releases and the live alarm, run the way a user runs them: `reverie serve` on loopback with a canary (or a
new release) under concurrent clients; a refusing canary is rolled back, an identical one promoted, a refusing
release rolled back by the alarm, and no request fails on the way."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from reverie.config import LiveThresholds
from reverie.cycle import ensure_release
from reverie.engines.refusal import is_refusal
from reverie.registry import LiveCounts, ModelRecord
from reverie.serving.canary import route_key, takes_canary
from reverie.serving.live import judge
from reverie.stats import rate_difference_interval, wilson_interval
from reverie.workspace import Workspace

from conftest import REFUSAL, build_refusing_model, make_workspace, reverie, start_server

MIN_REQUESTS = 20
# Wide enough that an identical canary is judged not worse after MIN_REQUESTS answers (0 of 20: Wilson up to 0.16).
LOOSE = {"max_error_rate": 0.2, "max_refusal_increase": 0.2, "max_thumbs_down_increase": 0.2}
USERS = [f"user-{n}" for n in range(40)]


@pytest.fixture(scope="session")
def refusing_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return build_refusing_model(tmp_path_factory.mktemp("refusing-llama"), tiny_model_dir)


def live_workspace(root: Path, model_dir: Path, **serve: object) -> Path:
    """A workspace on the tiny model whose server polls fast, judges after MIN_REQUESTS and has no memory."""
    return make_workspace(root, model_dir, serve={
        "retrieval": False, "max_tokens": 8, "poll_seconds": 0.2, "alarm": {"min_requests": MIN_REQUESTS},
        "live_thresholds": LOOSE, **serve})


def register(workspace_dir: Path, model_id: str, source: Path) -> str:
    """A candidate beside the bootstrapped release, from external weights; returns the release's id."""
    ws = Workspace.open(workspace_dir)
    release = ensure_release(ws)
    ws.registry.add_model(ModelRecord(id=model_id, status="candidate", source=str(source), created_at=time.time()))
    return release


def drive(url: str, done, after: int = 12, limit: int = 600) -> list[dict]:
    """Four client threads, each cycling through USERS, send chats until `done(GET /v1/canary)` holds, then `after`
    more each; at most `limit` requests in all. Every request's user, status, model, arm and whether it was sent
    after `done` held, in the order answered."""
    records: list[dict] = []
    lock, decided = threading.Lock(), threading.Event()

    def client(index: int) -> None:
        extra = 0
        with httpx.Client(timeout=60) as session:
            for n in range(limit):
                sent_after = decided.is_set()
                if sent_after:
                    extra += 1
                    if extra > after:
                        return
                user = USERS[(index + 4 * n) % len(USERS)]
                body = {"model": "reverie", "messages": [{"role": "user", "content": f"hello {n}"}], "max_tokens": 8,
                        "user": user}
                response = session.post(f"{url}/v1/chat/completions", json=body)
                answer = response.json()
                with lock:
                    records.append({"user": user, "status": response.status_code, "model": answer.get("model"),
                                    "arm": response.headers.get("x-reverie-arm"), "decided": sent_after,
                                    "text": answer["choices"][0]["message"]["content"] if "choices" in answer else ""})
                    if len(records) >= limit:
                        return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads) and not decided.is_set():
        if done(httpx.get(f"{url}/v1/canary", timeout=30).json()):
            decided.set()
        time.sleep(0.2)
    for thread in threads:
        thread.join()
    return records


def actions(report: dict) -> list[str]:
    return [decision["action"] for decision in report["decisions"]]


def test_wilson_and_newcombe_intervals_bound_live_rates() -> None:
    for hits, n in ((0, 20), (3, 20), (20, 20), (1, 1000)):
        interval = wilson_interval(hits, n)
        assert 0 <= interval.low <= hits / n <= interval.high <= 1
        assert interval.high - interval.low > wilson_interval(hits * 10, n * 10).high - wilson_interval(
            hits * 10, n * 10).low  # more observations, a narrower interval
    assert wilson_interval(0, 20).high > 0  # no refusal seen is not a refusal rate known to be zero
    worse = rate_difference_interval((20, 20), (0, 50))
    same = rate_difference_interval((2, 20), (5, 50))
    assert worse.low > 0.5 and same.low < 0 < same.high
    assert rate_difference_interval((0, 0), (3, 10)).low == -1  # no observations: anything is possible


def test_a_judgement_waits_for_min_requests_and_confidence() -> None:
    thresholds = LiveThresholds(**LOOSE)
    release = LiveCounts("release", requests=100)
    refusing = LiveCounts("canary", requests=MIN_REQUESTS, refusals=MIN_REQUESTS)
    early = judge(LiveCounts("canary", requests=5, refusals=5), release, thresholds, MIN_REQUESTS)
    assert early.verdict == "undecided" and early.breached  # past the threshold already, judged only later
    worse = judge(refusing, release, thresholds, MIN_REQUESTS)
    assert worse.verdict == "worse" and "max_refusal_increase" in worse.reasons[0]
    assert judge(LiveCounts("canary", requests=MIN_REQUESTS), release, thresholds, MIN_REQUESTS).verdict == "not worse"
    strict = LiveThresholds(max_error_rate=0.02, max_refusal_increase=0.05, max_thumbs_down_increase=0.05)
    assert judge(LiveCounts("canary", requests=MIN_REQUESTS), release, strict, MIN_REQUESTS).verdict == "undecided"
    erring = judge(LiveCounts("canary", requests=40, errors=20), release, thresholds, MIN_REQUESTS)
    assert erring.verdict == "worse" and "max_error_rate" in erring.reasons[0]


def test_sticky_routing_is_deterministic_and_near_the_share() -> None:
    keys = [route_key("user", f"u{n}", None, "client") for n in range(2000)]
    arms = [takes_canary(key, "m-canary", 0.2) for key in keys]
    assert arms == [takes_canary(key, "m-canary", 0.2) for key in keys]  # the same user, the same arm, every time
    assert 0.15 < sum(arms) / len(arms) < 0.25
    assert arms != [takes_canary(key, "m-other", 0.2) for key in keys]  # each canary draws its own users
    assert route_key("user", "alice", "s1", "c") == route_key("session", "bob", "alice", "c")  # both name alice
    assert route_key("session", None, None, "c1") != route_key("session", None, None, "c2")  # then the client


def test_a_refusing_canary_is_rolled_back_and_no_request_fails(tmp_path: Path, tiny_model_dir: Path,
                                                               refusing_model_dir: Path) -> None:
    root = live_workspace(tmp_path / "ws", tiny_model_dir,
                          canary={"model": "m-refuser", "share": 0.3, "min_requests": MIN_REQUESTS})
    release = register(root, "m-refuser", refusing_model_dir)
    url, process = start_server(root)
    try:
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["reverie", release, "m-refuser"]
        records = drive(url, lambda report: "canary-rollback" in actions(report))
        report = httpx.get(f"{url}/v1/canary").json()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert records and all(r["status"] == 200 for r in records)
    assert {r["model"] for r in records if r["arm"] == "canary"} == {"m-refuser"}
    assert all(is_refusal(r["text"]) for r in records if r["arm"] == "canary")
    assert all(r["arm"] == "release" for r in records if r["decided"])  # after the rollback, no user gets the canary
    assigned = {user for user in USERS if takes_canary(route_key("user", user, None, ""), "m-refuser", 0.3)}
    assert assigned and {r["user"] for r in records if r["arm"] == "canary"} <= assigned  # sticky by the user's hash
    assert report["canary"] is None and actions(report) == ["canary-rollback"]
    registry = Workspace.open(root).registry
    (decision,) = registry.serving_decisions()
    assert (decision.action, decision.model_id, decision.against_id) == ("canary-rollback", "m-refuser", release)
    assert "refusal rate rise" in decision.reason and decision.figures["arm"]["requests"] >= MIN_REQUESTS
    assert decision.figures["arm"]["refusal_rate"]["low"] > decision.figures["against"]["refusal_rate"]["high"]
    assert registry.get_alias() == release
    assert registry.live_counts("m-refuser").refusals >= MIN_REQUESTS  # the counts outlive the server
    assert "canary-rollback of m-refuser" in reverie("history", "-w", str(root)).stdout
    url, process = start_server(root)  # judged once against this release: not tried again
    try:
        assert "m-refuser" not in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "judged against" in process.stdout.read()


def test_an_identical_canary_is_promoted_without_a_failed_request(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = live_workspace(tmp_path / "ws", tiny_model_dir,
                          canary={"model": "m-twin", "share": 0.3, "min_requests": MIN_REQUESTS, "sticky": "session"})
    release = register(root, "m-twin", tiny_model_dir)
    url, process = start_server(root)
    try:
        records = drive(url, lambda report: "canary-promote" in actions(report))
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert records and all(r["status"] == 200 for r in records)
    assert {r["model"] for r in records if not r["decided"]} == {release, "m-twin"}
    assert all(r["model"] == "m-twin" for r in records[-8:])  # the promoted canary is the release for everyone
    registry = Workspace.open(root).registry
    assert registry.get_alias() == "m-twin" and registry.get_model("m-twin").status == "release"
    promotion = registry.release_events()[-1]
    assert promotion.action == "canary-promote" and "not worse" in promotion.reason
    assert "canary-promote of m-twin" in reverie("history", "-w", str(root)).stdout
    assert f"is now {release} (was m-twin)" in reverie("rollback", "-w", str(root)).stdout  # a promotion is a release


def test_the_alarm_rolls_a_refusing_release_back_with_its_reason(tmp_path: Path, tiny_model_dir: Path,
                                                                 refusing_model_dir: Path) -> None:
    root = live_workspace(tmp_path / "ws", tiny_model_dir)
    previous = register(root, "m-refuser", refusing_model_dir)
    url, process = start_server(root)
    try:
        baseline = drive(url, lambda report: False, limit=MIN_REQUESTS + 8)  # the release's figures while it serves
        Workspace.open(root).registry.set_alias("m-refuser", "release")  # as a cycle's close moves it
        records = drive(url, lambda report: "alarm-rollback" in actions(report) and report["release"] == previous)
    finally:
        process.terminate()
        process.wait(timeout=30)
    served = baseline + records
    assert all(r["status"] == 200 for r in served)
    assert "m-refuser" in {r["model"] for r in records} and records[-1]["model"] == previous
    registry = Workspace.open(root).registry
    rolled_back = registry.release_events()[-1]
    assert registry.get_alias() == previous and rolled_back.action == "rollback"
    assert "refusal rate rise" in rolled_back.reason  # the release event says why, as the decision does
    (decision,) = registry.serving_decisions()
    assert (decision.action, decision.model_id, decision.against_id) == ("alarm-rollback", "m-refuser", previous)
    assert decision.figures["rolled_back_to"] == previous and "refusal rate rise" in decision.reason
    history = reverie("history", "-w", str(root)).stdout
    assert "alarm-rollback of m-refuser" in history and "max_refusal_increase" in history


@pytest.mark.parametrize("setting, named", [
    ("serve.canary.share=1.5", "serve.canary.share"),
    ("serve.canary.sticky=cookie", "serve.canary.sticky"),
    ("serve.alarm.rollback_to=best", "serve.alarm.best_metric"),
    ("serve.live_thresholds.max_refusal_increase=-0.1", "serve.live_thresholds.max_refusal_increase"),
    ("serve.canary.model=m-nowhere", "serve.canary.model 'm-nowhere'"),
])
def test_bad_canary_settings_are_clear_errors(workspace_dir: Path, setting: str, named: str) -> None:
    result = reverie("serve", "-w", str(workspace_dir), "--set", setting, check=False)
    assert result.returncode != 0 and named in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
