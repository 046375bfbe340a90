"""Schedules: --every durations and 5-field cron expressions (UTC)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from processors.export.errors import ExportConfigError
from processors.export.schedule import (
    EverySchedule,
    parse_cron,
    parse_duration,
    run_scheduled,
)

T0 = datetime(2025, 5, 1, 12, 3, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300),
        ("30s", 30),
        ("1h30m", 5400),
        ("2d", 172800),
        ("90", 90),
        (" 1.5m ", 90),
        ("250ms", 0.25),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "5x", "m5", "5m foo", "-5m", "5m5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ExportConfigError, match="--every"):
        parse_duration(text)


def test_every_keeps_its_phase_and_skips_missed_slots() -> None:
    s = EverySchedule(timedelta(minutes=5))
    assert s.first(T0) == T0
    assert s.next_after(T0, T0 + timedelta(seconds=3)) == T0 + timedelta(minutes=5)
    # a run that took 12 minutes: the next slot is the first one still ahead
    assert s.next_after(T0, T0 + timedelta(minutes=12)) == T0 + timedelta(minutes=15)


def test_cron_next_times() -> None:
    s = parse_cron("*/5 * * * *")
    assert s.first(T0) == datetime(2025, 5, 1, 12, 5, tzinfo=UTC)
    assert s.next_after(s.first(T0), s.first(T0)) == datetime(2025, 5, 1, 12, 10, tzinfo=UTC)
    daily = parse_cron("30 2 * * 1")  # Mondays at 02:30 UTC
    assert daily.first(T0) == datetime(2025, 5, 5, 2, 30, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["* * * *", "*/5 * * * * *", "61 * * * *", "a b c d e"])
def test_cron_rejects(expr: str) -> None:
    with pytest.raises(ExportConfigError, match="--cron"):
        parse_cron(expr)


def test_run_scheduled_calls_the_job_on_time() -> None:
    now = [T0]
    calls: list[datetime] = []

    class FakeStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            now[0] += timedelta(seconds=timeout or 0)
            return False

    def job() -> None:
        calls.append(now[0])
        now[0] += timedelta(seconds=10)  # the export takes 10 s

    runs = run_scheduled(
        EverySchedule(timedelta(minutes=5)), job, stop=FakeStop(), clock=lambda: now[0], max_runs=3
    )
    assert runs == 3
    assert calls == [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)]


def test_run_scheduled_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    assert run_scheduled(EverySchedule(timedelta(seconds=1)), lambda: None, stop=stop) == 0
