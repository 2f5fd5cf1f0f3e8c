"""A rhythm file: slots with a schedule, what each runs, how deep and what it may change. Presets ship in
reverie/presets/rhythms/; a workspace's own go in its rhythms/ folder (NAME.yaml) and take precedence."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import time as clock_time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from reverie.errors import ReverieError
from reverie.rhythms.actions import MEMORY_ACTIONS
from reverie.validation import describe_errors, nearest, parse_yaml

WORKSPACE_DIR = "rhythms"  # a workspace's own rhythm files: rhythms/NAME.yaml
SUFFIX = ".yaml"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
PHASE_ORDER = ("learn", "compress", "dream", "gate")  # cycle.PHASES in order (tests/test_rhythms.py checks)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Weekday = Literal[WEEKDAYS]
PhaseName = Literal[PHASE_ORDER]
MemoryAction = Literal[tuple(MEMORY_ACTIONS)]
SlotName = Annotated[str, StringConstraints(pattern=NAME_PATTERN.pattern)]
ConfigKey = Annotated[str, StringConstraints(pattern=r"[a-z_]+(\.[A-Za-z0-9_/-]+)+")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Schedule(_Strict):
    """When a slot is due: at a local time on some days; `week` or `day_of_month` make it monthly."""

    at: str = Field(..., description="Local time of day, HH:MM (24-hour).")
    days: list[Weekday] | None = Field(None, description="Days of the week (default: every day).")
    week: int | None = Field(None, ge=1, le=4, description="Only in this week of the month (days 1-7 are week 1), "
                             "on `days`: week 1 with days [mon] is the month's first Monday.")
    day_of_month: int | None = Field(None, ge=1, le=28, description="Only on this day of the month (1-28, so that "
                                     "every month has it); not with days or week.")

    @field_validator("at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("expected HH:MM on a 24-hour clock, e.g. '03:00'")
        return value

    @model_validator(mode="after")
    def _one_kind_of_day(self) -> Schedule:
        if self.day_of_month is not None and (self.days is not None or self.week is not None):
            raise ValueError("day_of_month names the day by itself: leave out days and week")
        return self

    @property
    def time_of_day(self) -> clock_time:
        hour, minute = self.at.split(":")
        return clock_time(int(hour), int(minute))

    @property
    def weekdays(self) -> list[int]:
        """0 (Monday) to 6 (Sunday), as datetime.weekday() numbers them."""
        return [WEEKDAYS.index(day) for day in (self.days or WEEKDAYS)]


class Slot(_Strict):
    """One scheduled piece of work: a run of cycle phases, or memory-only actions."""

    about: str = Field("", description="What the slot is for, shown by `reverie rhythm show`.")
    schedule: Schedule
    phases: list[PhaseName] = Field(default_factory=list, description="Cycle phases, contiguous and in cycle order "
                                    "(learn, compress, dream, gate); the cycle stays open after a slot that stops "
                                    "before gate, and the next phase slot resumes it.")
    memory: list[MemoryAction] = Field(default_factory=list, description="Memory-only actions: " + "; ".join(
        f"'{name}': {action.about}" for name, action in MEMORY_ACTIONS.items()) + ".")
    changes: Literal["weights", "memory"] = Field(..., description="What the slot may change: weights (phases) or "
                                                  "memory only (checked after it runs: the release and the models "
                                                  "must be as they were).")
    overrides: dict[ConfigKey, Any] = Field(default_factory=dict, description="Config keys for this slot alone; only "
                                            "on a memory slot or one that runs a whole cycle (learn to gate).")

    @model_validator(mode="after")
    def _consistent(self) -> Slot:
        if bool(self.phases) == bool(self.memory):
            raise ValueError("give either phases or memory actions (exactly one of the two)")
        if self.phases:
            start = PHASE_ORDER.index(self.phases[0])
            if tuple(self.phases) != PHASE_ORDER[start : start + len(self.phases)]:
                raise ValueError(f"phases {self.phases}: list them contiguous and in cycle order "
                                 f"({', '.join(PHASE_ORDER)})")
        wanted = "weights" if self.phases else "memory"
        if self.changes != wanted:
            raise ValueError(f"changes: {self.changes!r}, but a slot with {'phases' if self.phases else 'memory'} "
                             f"changes {wanted}")
        if self.overrides and self.phases and tuple(self.phases) != PHASE_ORDER:
            raise ValueError("overrides on a slot that runs part of a cycle would change the config fingerprint "
                             "between the slots of one cycle, and the next slot could not resume it: move them to "
                             "the rhythm's overrides")
        return self


class RhythmSpec(_Strict):
    description: str = Field(..., min_length=1, description="What the rhythm is for.")
    overrides: dict[ConfigKey, Any] = Field(default_factory=dict, description="Config keys every slot runs with "
                                            "(like --set): the rhythm's depth, the same for each slot of a cycle.")
    slots: dict[SlotName, Slot] = Field(..., min_length=1, description="The slots, by name.")


@dataclass(frozen=True)
class Rhythm:
    name: str
    origin: str  # the file it was read from, or 'preset'
    text: str
    spec: RhythmSpec

    def overrides(self, slot: str) -> list[str]:
        """The --set values a slot runs with: the rhythm's, then the slot's own."""
        merged = self.spec.overrides | self.spec.slots[slot].overrides
        return [f"{key}={json.dumps(value)}" for key, value in merged.items()]  # JSON is YAML


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ReverieError(f"rhythm {name!r}: a name is lower-case letters, digits, '-' and '_' (it names the file "
                           f"{WORKSPACE_DIR}/NAME{SUFFIX}; no paths)")
    return name


def _presets() -> dict[str, Any]:
    folder = resources.files("reverie.presets").joinpath("rhythms")
    return {entry.name.removesuffix(SUFFIX): entry for entry in folder.iterdir() if entry.name.endswith(SUFFIX)}


def rhythm_names(root: Path) -> dict[str, str]:
    """Every rhythm the workspace can run: name -> where it comes from (its file, or 'preset')."""
    names = {name: "preset" for name in _presets()}
    folder = root / WORKSPACE_DIR
    if folder.is_dir():
        names |= {path.stem: str(path) for path in folder.glob(f"*{SUFFIX}") if NAME_PATTERN.fullmatch(path.stem)}
    return dict(sorted(names.items()))


def load_rhythm(name: str, root: Path) -> Rhythm:
    """The workspace's rhythms/NAME.yaml, else the preset NAME; every problem of the file in one error."""
    check_name(name)
    path = root / WORKSPACE_DIR / f"{name}{SUFFIX}"
    presets = _presets()
    if path.is_file():
        origin, text = str(path), path.read_text(encoding="utf-8")
    elif name in presets:
        origin, text = "preset", presets[name].read_text(encoding="utf-8")
    else:
        known = ", ".join(rhythm_names(root)) or "none"
        raise ReverieError(f"rhythm {name!r}: no {path} and no preset of that name (known: {known})")
    label = path if origin != "preset" else f"preset rhythm {name}"
    try:
        tree, lines, problems = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ReverieError(f"{label}: not valid YAML: {exc}") from None
    try:
        spec = RhythmSpec.model_validate({} if tree is None else tree)
    except ValidationError as exc:
        problems += describe_errors(exc, RhythmSpec, lambda loc: f"line {line}" if (line := nearest(lines, loc)) else "")
    if problems:
        raise ReverieError(f"{label}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))
    return Rhythm(name, origin, text, spec)
