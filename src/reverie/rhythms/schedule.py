"""When a slot is due, on an injected clock: local wall time for cron and systemd, or a simulated, accelerated
clock that stands still while a slot works (so a slow CPU does not eat the simulated day)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta

from reverie.rhythms.spec import Schedule

SEARCH_DAYS = 400  # every schedule recurs within a year (monthly ones every month)


def runs_on(schedule: Schedule, day: date) -> bool:
    if schedule.day_of_month is not None:
        return day.day == schedule.day_of_month
    in_week = schedule.week is None or (day.day - 1) // 7 + 1 == schedule.week
    return in_week and day.weekday() in schedule.weekdays


def latest_occurrence(schedule: Schedule, now: datetime) -> datetime | None:
    """The last time at or before `now` the slot was scheduled: what a run at `now` owes, however many
    occurrences an outage missed (so a missed slot is caught up once, not once per occurrence)."""
    for back in range(SEARCH_DAYS):
        day = now.date() - timedelta(days=back)
        at = datetime.combine(day, schedule.time_of_day)
        if at <= now and runs_on(schedule, day):
            return at
    return None


def next_occurrence(schedule: Schedule, after: datetime) -> datetime | None:
    """The first scheduled time strictly after `after`."""
    for ahead in range(SEARCH_DAYS):
        day = after.date() + timedelta(days=ahead)
        at = datetime.combine(day, schedule.time_of_day)
        if at > after and runs_on(schedule, day):
            return at
    return None


def system_now() -> datetime:
    """Local wall time, to the minute's second (naive, like cron's)."""
    return datetime.now().replace(microsecond=0)


class SimulatedClock:
    """Simulated time that runs `speed` times faster than the wall clock from `start`, except while paused."""

    def __init__(self, start: datetime, speed: float):
        self.start, self.speed = start, speed
        self._idle = 0.0  # wall seconds counted so far, the pauses left out
        self._since: float | None = time.monotonic()

    def now(self) -> datetime:
        running = time.monotonic() - self._since if self._since is not None else 0.0
        return (self.start + timedelta(seconds=(self._idle + running) * self.speed)).replace(microsecond=0)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Simulated time stands still inside (a slot's work takes no simulated time)."""
        if self._since is not None:
            self._idle += time.monotonic() - self._since
        self._since = None
        try:
            yield
        finally:
            self._since = time.monotonic()
