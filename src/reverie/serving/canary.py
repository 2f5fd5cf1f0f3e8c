"""Canary releases and the live alarm: a candidate serves a sticky share of users beside the release and is
promoted or rolled back on its live figures; a new release is judged against the figures of the release it
replaced and rolled back when worse. Every decision goes into the registry with its reason and figures.

Everything here runs on the server's event loop thread (the registry's SQLite connection lives there), so the
server hands streamed answers' outcomes over with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from reverie.cycle import rollback
from reverie.errors import ReverieError
from reverie.phases.outputs import gate_verdicts
from reverie.progress import status_line
from reverie.registry import LiveCounts, ServingDecision
from reverie.registry.entities import ServingAction
from reverie.serving.live import ArmStats, figures, judge
from reverie.serving.slot import ModelSlot, Served, load_for_serving
from reverie.workspace import Workspace

RELEASING_ACTIONS = ("release", "override", "canary-promote")  # events that bring a new release the alarm watches


def route_key(sticky: str, user: str | None, session: str | None, client: str) -> str:
    """What keeps a client on one arm: its user or session, by serve.canary.sticky, else the client itself."""
    first, second = (user, session) if sticky == "user" else (session, user)
    return f"user:{first or second}" if first or second else f"client:{client}"


def takes_canary(key: str, canary_id: str, share: float) -> bool:
    """Deterministic: the key's hash, salted with the canary's id (so each canary draws its own users), against
    the share."""
    digest = hashlib.sha256(f"{canary_id}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def load_canary(workspace: Workspace, release_id: str) -> Served | None:
    """serve.canary.model loaded, or None when there is none, it is the release already, or it was judged against
    this release before (said once). A model that does not exist or crossed a Gate red line is an error."""
    name = workspace.config.serve.canary.model
    if name is None:
        return None
    registry = workspace.registry
    model_id = registry.get_alias(name) or name
    if registry.find_model(model_id) is None:
        raise ReverieError(f"serve.canary.model {name!r}: no such model id or alias in the registry "
                           "(see `reverie history` and `reverie status`)")
    if model_id == release_id:
        status_line(f"serve: the canary {model_id} is the release already; no canary")
        return None
    if judged := [d for d in registry.serving_decisions()
                  if d.model_id == model_id and d.against_id == release_id and d.action.startswith("canary")]:
        status_line(f"serve: the canary {model_id} was judged against {release_id} already ({judged[-1].action}: "
                    f"{judged[-1].reason}); no canary: name another model in serve.canary.model")
        return None
    for cycle in registry.list_cycles():
        for verdict in gate_verdicts(registry.phase_runs(cycle.id)):
            if verdict.model == model_id and not verdict.overridable:
                raise ReverieError(f"serve.canary.model {model_id}: it crossed a red line at the Gate "
                                   f"({'; '.join(verdict.reasons)}), so it may not serve")
    return load_for_serving(workspace, registry.get_model(model_id))


@dataclass
class Alarm:
    """A new release under watch, against the release it replaced."""

    release: str
    previous: str
    since: float  # when it became the release
    blocked: str = ""  # why the last rollback attempt was refused (a cycle open), said once


class LiveControl:
    """Routes each request to an arm, counts what each model's answers come to, and decides: the canary promoted or
    rolled back, a new release rolled back (serve.canary, serve.alarm, serve.live_thresholds)."""

    def __init__(self, workspace: Workspace, slot: ModelSlot, canary: Served | None):
        self.workspace = workspace
        self.settings = workspace.config.serve
        self.slot = slot
        slot.canary = canary
        self.stats: dict[str, ArmStats] = {}
        self.breach: dict[str, tuple[int, float]] = {}  # model -> (its requests, time) when a threshold was passed
        self.alarm: Alarm | None = None
        self.alarm_checked: str | None = None  # the release the alarm was last set up for
        self.decisions: list[dict] = []  # those taken by this server, for the endpoint

    # routing ---------------------------------------------------------------------------------------------
    def route(self, requested: str, key: str) -> tuple[Served | None, str]:
        """(model, arm) for a request: 'reverie' is routed by `key`; a model id pins that arm; (None, '') for a
        model this server does not serve."""
        release, canary = self.slot.served, self.slot.canary
        if requested == "reverie":
            if canary is not None and takes_canary(key, canary.model_id, self.settings.canary.share):
                return canary, "canary"
            return release, "release"
        if requested == release.model_id:
            return release, "release"
        if canary is not None and requested == canary.model_id:
            return canary, "canary"
        return None, ""

    def model_ids(self) -> list[str]:
        return [self.slot.served.model_id] + ([self.slot.canary.model_id] if self.slot.canary else [])

    # what answers came to -------------------------------------------------------------------------------
    def arm(self, model_id: str) -> ArmStats:
        if model_id not in self.stats:
            self.stats[model_id] = ArmStats(self.workspace.registry.live_counts(model_id) or LiveCounts(model_id))
        return self.stats[model_id]

    def answered(self, model_id: str, seconds: float, text: str) -> None:
        self.arm(model_id).answered(seconds, text)
        self.decide(model_id)

    def failed(self, model_id: str) -> None:
        self.arm(model_id).failed()
        self.decide(model_id)

    def rated_down(self, model_id: str) -> None:
        self.arm(model_id).rated_down()
        self.decide(model_id)

    def save(self) -> None:
        """Write the changed counts to the registry (called every serve.poll_seconds and at shutdown)."""
        for stats in self.stats.values():
            if stats.dirty:
                self.workspace.registry.save_live_counts(stats.counts)
                stats.dirty = False

    # decisions ------------------------------------------------------------------------------------------
    def decide(self, model_id: str) -> None:
        if self.slot.canary is not None and model_id in (self.slot.canary.model_id, self.slot.served.model_id):
            self._judge_canary()
        alarm = self._alarm()
        if alarm is not None and model_id == alarm.release:
            self._judge_release(alarm)

    def _judge_canary(self) -> None:
        canary, release = self.slot.canary.model_id, self.slot.served.model_id
        judgement = judge(self.arm(canary).counts, self.arm(release).counts, self.settings.live_thresholds,
                          self.settings.canary.min_requests)
        self._note_breach(canary, judgement.breached)
        if judgement.verdict == "undecided":
            return
        promote = judgement.verdict == "not worse"
        action: ServingAction = "canary-promote" if promote else "canary-rollback"
        reason = (f"canary {canary} {'not worse than' if promote else 'worse than'} release {release} on live "
                  f"traffic: " + "; ".join(judgement.reasons))
        self._record(action, canary, release, reason)
        if promote:  # the registry moved the release with it: the slot takes the loaded model, no reload
            self.slot.swap(self.slot.canary)
        self.slot.canary = None  # requests already on the canary finish there; new ones go to the release
        status_line(f"serve: {action} of {canary}: {reason}")

    def _alarm(self) -> Alarm | None:
        """The release under watch: set up once per release that a release, override or canary promotion brought,
        against the release before it, unless the alarm has judged it already."""
        settings, release = self.settings.alarm, self.slot.served.model_id
        if not settings.enabled:
            return None
        if self.alarm_checked != release:
            self.alarm_checked, self.alarm = release, None
            registry = self.workspace.registry
            events = registry.release_events()
            moved = [n for n, event in enumerate(events) if event.model_id == release]
            if moved and moved[-1] > 0 and events[moved[-1]].action in RELEASING_ACTIONS:
                since = events[moved[-1]].at
                judged = any(d.model_id == release and d.action.startswith("alarm") and d.at >= since
                             for d in registry.serving_decisions())
                if not judged:
                    self.alarm = Alarm(release, events[moved[-1] - 1].model_id, since)
        return self.alarm

    def _judge_release(self, alarm: Alarm) -> None:
        judgement = judge(self.arm(alarm.release).counts, self.arm(alarm.previous).counts,
                          self.settings.live_thresholds, self.settings.alarm.min_requests)
        self._note_breach(alarm.release, judgement.breached)
        if judgement.verdict == "not worse":
            self._record("alarm-clear", alarm.release, alarm.previous,
                         f"release {alarm.release} not worse than {alarm.previous} on live traffic: "
                         + "; ".join(judgement.reasons))
            self.alarm = None
        elif judgement.verdict == "worse":
            reason = (f"release {alarm.release} worse than {alarm.previous} (as it served) on live traffic: "
                      + "; ".join(judgement.reasons))
            try:
                restored = self._roll_back(reason)
            except ReverieError as exc:  # a cycle is open: tried again on the next answer
                if not alarm.blocked:
                    status_line(f"serve: alarm on {alarm.release}: {reason}; cannot roll back yet ({exc})")
                alarm.blocked = str(exc)
                return
            self._record("alarm-rollback", alarm.release, alarm.previous, reason, rolled_back_to=restored)
            self.alarm = None
            status_line(f"serve: alarm-rollback of {alarm.release} to {restored}: {reason}")

    def _roll_back(self, reason: str) -> str:
        """The release pointer moved back, the reason on its release event (the slot follows it as it follows any
        move); the release it names."""
        settings = self.settings.alarm
        best = settings.rollback_to == "best"
        return rollback(self.workspace, to=settings.rollback_to, metric=settings.best_metric if best else None,
                        reason=reason)[1]

    def _note_breach(self, model_id: str, breached: bool) -> None:
        if breached and model_id not in self.breach:
            self.breach[model_id] = (self.arm(model_id).counts.requests, time.time())

    def _record(self, action: ServingAction, model_id: str, against_id: str, reason: str, **extra: object) -> None:
        confidence = self.settings.live_thresholds.confidence
        breach = self.breach.get(model_id)
        numbers = {"arm": figures(self.arm(model_id).counts, confidence),
                   "against": figures(self.arm(against_id).counts, confidence),
                   "breach_request": breach[0] if breach else None, "breach_at": breach[1] if breach else None,
                   **extra}
        decision = ServingDecision(0, action, model_id, against_id, time.time(), reason, numbers)
        self.workspace.registry.add_serving_decision(decision)
        self.decisions.append({"action": action, "model": model_id, "against": against_id, "at": decision.at,
                               "reason": reason, "figures": numbers})

    # the endpoint -----------------------------------------------------------------------------------------
    def report(self) -> dict:
        """Both arms side by side (the canary's, or the new release's against the one it replaced) and the
        decisions this server took."""
        confidence = self.settings.live_thresholds.confidence
        release = self.slot.served.model_id
        canary = None
        if self.slot.canary is not None:
            canary = {"model": self.slot.canary.model_id, "share": self.settings.canary.share,
                      "sticky": self.settings.canary.sticky, "min_requests": self.settings.canary.min_requests,
                      "arms": {"release": figures(self.arm(release).counts, confidence),
                               "canary": figures(self.arm(self.slot.canary.model_id).counts, confidence)}}
        alarm = self._alarm()
        watched = None
        if alarm is not None:
            watched = {"release": alarm.release, "previous": alarm.previous, "since": alarm.since,
                       "min_requests": self.settings.alarm.min_requests, "blocked": alarm.blocked or None,
                       "arms": {"release": figures(self.arm(alarm.release).counts, confidence),
                                "previous": figures(self.arm(alarm.previous).counts, confidence)}}
        return {"release": release, "canary": canary, "alarm": watched, "decisions": self.decisions,
                "thresholds": self.settings.live_thresholds.model_dump()}
