"""`reverie rhythm install`: the systemd timer and service, and the crontab lines, that call `reverie rhythm run`
at each slot's time. They only wake it: what is due, and catching up after downtime, is decided by the run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from reverie.rhythms.spec import WEEKDAYS, Rhythm, Schedule


def on_calendar(schedule: Schedule) -> str:
    """A systemd OnCalendar expression for the schedule."""
    if schedule.day_of_month is not None:
        return f"*-*-{schedule.day_of_month:02d} {schedule.at}:00"
    days = "" if schedule.days is None else ",".join(WEEKDAYS[d].capitalize() for d in schedule.weekdays) + " "
    month_days = "*" if schedule.week is None else f"{7 * schedule.week - 6:02d}..{7 * schedule.week:02d}"
    return f"{days}*-*-{month_days} {schedule.at}:00"


def cron_line(schedule: Schedule, command: str) -> str:
    """A crontab line. Cron ORs day-of-month with day-of-week, so a 'week N' slot wakes on each of that week's
    days and the run itself finds the slot due on the right weekday only."""
    hour, minute = schedule.at.split(":")
    if schedule.day_of_month is not None:
        month_day, week_day = str(schedule.day_of_month), "*"
    elif schedule.week is not None:
        month_day, week_day = f"{7 * schedule.week - 6}-{7 * schedule.week}", "*"
    else:
        month_day = "*"
        week_day = "*" if schedule.days is None else ",".join(str((d + 1) % 7) for d in schedule.weekdays)
    return f"{int(minute)} {int(hour)} {month_day} * {week_day} {command}"


def install_text(rhythm: Rhythm, root: Path) -> str:
    """Unit files and crontab lines for the rhythm on the workspace at `root`, to copy into place."""
    root = root.resolve()
    unit = f"reverie-rhythm-{rhythm.name}"
    run = f"{shlex.quote(sys.executable)} -m reverie rhythm run {rhythm.name} -w {shlex.quote(str(root))}"
    calendars = "\n".join(f"OnCalendar={on_calendar(slot.schedule)}" for slot in rhythm.spec.slots.values())
    log = shlex.quote(str(root / ".reverie" / f"rhythm-{rhythm.name}.log"))
    crontab = "\n".join(f"{cron_line(slot.schedule, f'{run} >> {log} 2>&1')}  # {name}"
                        for name, slot in rhythm.spec.slots.items())
    return f"""# systemd (user units: ~/.config/systemd/user/; then `systemctl --user daemon-reload` and
# `systemctl --user enable --now {unit}.timer`; `loginctl enable-linger $USER` keeps it running after logout).
# Persistent=true runs a slot missed while the machine was off at the next boot; `rhythm run` catches it up once.

# {unit}.service
[Unit]
Description=reverie rhythm {rhythm.name} on {root}

[Service]
Type=oneshot
WorkingDirectory={root}
ExecStart={run}

# {unit}.timer
[Unit]
Description=reverie rhythm {rhythm.name}: wake at each slot's time

[Timer]
{calendars}
Persistent=true

[Install]
WantedBy=timers.target

# cron (`crontab -e`): one line per slot. A second run while one is working records a busy skip and leaves
# the slot owed to the next call.
{crontab}
"""
