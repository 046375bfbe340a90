"""Event-time hours and the rolling 7-day window (168 hour-aligned buckets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "WINDOW_HOURS",
    "hour_of",
    "hour_start",
    "in_window",
    "window_start",
    "window_start_hour",
]

WINDOW_HOURS = 168
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def hour_of(ts: datetime) -> int:
    """Hours since the epoch: the bucket an event belongs to."""
    return int(ts.timestamp() // 3600)


def hour_start(hour: int) -> datetime:
    return _EPOCH + timedelta(hours=hour)


def window_start_hour(as_of: datetime) -> int:
    """The window starts at the top of the hour 167 hours before the hour of ``as_of``."""
    return hour_of(as_of) - (WINDOW_HOURS - 1)


def window_start(as_of: datetime) -> datetime:
    return hour_start(window_start_hour(as_of))


def in_window(hour: int, as_of: datetime) -> bool:
    """True for the 168 hours of the window (and the future hour a skewed clock may hit)."""
    return hour >= window_start_hour(as_of)
