"""When scheduled exports run: ``--every 5m`` or a 5-field cron expression.

Cron expressions are parsed by ``croniter`` (a dependency of faust-streaming,
so always installed with this project); times are UTC. ``--every`` runs at
once and then every interval after the start, skipping slots an overlong run
missed; ``--cron`` first runs at the next matching minute.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from processors.export.errors import ExportConfigError

__all__ = [
    "CronSchedule",
    "EverySchedule",
    "Schedule",
    "parse_cron",
    "parse_duration",
    "run_scheduled",
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, flag: str = "--every") -> timedelta:
    """``"5m"``, ``"90s"``, ``"1h30m"``, ``"2d"`` → timedelta; a bare number means seconds."""
    s = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        s += "s"
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ExportConfigError(f"{flag} {text!r}: not a duration; use e.g. 30s, 5m, 1h30m or 2d")
    if total <= 0:
        raise ExportConfigError(f"{flag} {text!r}: must be longer than zero")
    return timedelta(seconds=total)


class Schedule(Protocol):
    def first(self, now: datetime) -> datetime: ...
    def next_after(self, previous: datetime, now: datetime) -> datetime: ...
    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class EverySchedule:
    interval: timedelta

    def first(self, now: datetime) -> datetime:
        return now

    def next_after(self, previous: datetime, now: datetime) -> datetime:
        nxt = previous + self.interval
        if nxt <= now:  # the last run overran: skip the missed slots, keep the phase
            missed = (now - previous) // self.interval
            nxt = previous + self.interval * (missed + 1)
        return nxt

    def describe(self) -> str:
        return f"every {self.interval}"


@dataclass(frozen=True, slots=True)
class CronSchedule:
    expression: str

    def _next(self, after: datetime) -> datetime:
        from croniter import croniter

        nxt = croniter(self.expression, after.astimezone(UTC)).get_next(datetime)
        return nxt if nxt.tzinfo else nxt.replace(tzinfo=UTC)

    def first(self, now: datetime) -> datetime:
        return self._next(now)

    def next_after(self, previous: datetime, now: datetime) -> datetime:
        return self._next(max(previous, now))

    def describe(self) -> str:
        return f"cron {self.expression!r} (UTC)"


def parse_cron(expression: str) -> CronSchedule:
    """Validate a 5-field cron expression (minute hour day-of-month month day-of-week)."""
    from croniter import croniter

    fields = expression.split()
    if len(fields) != 5:
        raise ExportConfigError(
            f"--cron {expression!r}: needs 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    if not croniter.is_valid(" ".join(fields)):
        raise ExportConfigError(f"--cron {expression!r}: not a valid cron expression")
    return CronSchedule(" ".join(fields))


def run_scheduled(
    schedule: Schedule,
    job: Callable[[], object],
    *,
    stop: threading.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    max_runs: int | None = None,
) -> int:
    """Call ``job`` at the schedule's times until ``stop`` is set; return the number of runs.

    ``job`` reports its own failures; an exception from it ends the loop.
    """
    runs = 0
    due = schedule.first(clock())
    while not stop.is_set():
        wait = (due - clock()).total_seconds()
        if wait > 0 and stop.wait(wait):
            break
        started = due
        job()
        runs += 1
        if max_runs is not None and runs >= max_runs:
            break
        due = schedule.next_after(started, clock())
    return runs
