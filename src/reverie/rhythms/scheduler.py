"""`reverie rhythm serve`: an embedded APScheduler in the foreground. On the wall clock each slot is a cron job;
on a simulated clock one job ticks and runs what the simulated time makes due. Either way the work is
runner.run_due, so a slot runs once whether serve, cron or a person calls it."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from reverie.progress import status_line
from reverie.rhythms.runner import run_due
from reverie.rhythms.schedule import SimulatedClock, system_now
from reverie.rhythms.spec import WEEKDAYS, Rhythm, Schedule


def cron_fields(schedule: Schedule) -> dict[str, str]:
    """APScheduler CronTrigger fields (all must match, unlike Unix cron's day-of-month OR day-of-week)."""
    hour, minute = schedule.at.split(":")
    fields = {"hour": str(int(hour)), "minute": str(int(minute))}
    if schedule.day_of_month is not None:
        fields["day"] = str(schedule.day_of_month)
        return fields
    fields["day_of_week"] = ",".join(WEEKDAYS[day] for day in schedule.weekdays)
    if schedule.week is not None:
        fields["day"] = f"{7 * schedule.week - 6}-{7 * schedule.week}"
    return fields


def serve(root: Path, rhythm: Rhythm, clock: SimulatedClock | None = None, hours: float | None = None,
          tick_s: float = 0.5) -> None:
    """Run the rhythm until interrupted, or (on a simulated clock) until `hours` of simulated time have passed."""
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # not a line per tick skipped while a slot works
    # one worker: two slots never overlap inside this process (the rhythm lock guards against other processes)
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(1)},
                                  job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
    if clock is None:
        run_due(root, rhythm, system_now())  # catch up once on what was missed while nothing ran
        for name, slot in rhythm.spec.slots.items():
            scheduler.add_job(lambda: run_due(root, rhythm, system_now()), "cron", id=name,
                              **cron_fields(slot.schedule))
        status_line(f"rhythm {rhythm.name}: {len(rhythm.spec.slots)} slot(s) scheduled; Ctrl-C stops")
    else:
        session = f"sim-{uuid.uuid4().hex[:8]}"
        end = clock.start + timedelta(hours=hours) if hours is not None else None

        def tick() -> None:
            now = clock.now()
            if end is not None and now >= end:
                status_line(f"simulated clock reached {end:%a %Y-%m-%d %H:%M}: stopping")
                scheduler.shutdown(wait=False)
                return
            with clock.paused():  # a slot's work takes no simulated time
                run_due(root, rhythm, now, clock=session)

        scheduler.add_job(tick, "interval", seconds=tick_s, id="tick", next_run_time=datetime.now())
        status_line(f"rhythm {rhythm.name} on a simulated clock ({session}) from {clock.start:%a %Y-%m-%d %H:%M}, "
                    f"{clock.speed:g}x" + (f", for {hours:g} simulated hour(s)" if hours is not None else ""))
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        status_line(f"rhythm {rhythm.name}: stopped")
