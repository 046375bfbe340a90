"""Published stats into the versioned tables behind the ``model_stats_*`` views."""

from __future__ import annotations

from collections.abc import Sequence

from processors.clickhouse import ClickHouse
from schemas.stats import HOURLY_COLUMNS, STATS_COLUMNS, HourlyRow, StatsRow

__all__ = ["write_hourly", "write_stats"]


def write_stats(ch: ClickHouse, rows: Sequence[StatsRow]) -> int:
    """Rows are versioned by ``as_of``: inserting one twice is harmless."""
    return ch.insert(
        "telemetry.model_stats_7d_versions", [r.as_tuple() for r in rows], STATS_COLUMNS
    )


def write_hourly(ch: ClickHouse, rows: Sequence[HourlyRow]) -> int:
    return ch.insert(
        "telemetry.model_stats_hourly_versions", [r.as_tuple() for r in rows], HOURLY_COLUMNS
    )
