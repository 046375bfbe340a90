"""Writers to ClickHouse: deduplicating raw events, rejected input, published stats."""

from processors.sinks.rejected import Rejected, write_rejected
from processors.sinks.requests import REQUEST_COLUMNS, event_row, write_events
from processors.sinks.stats import write_hourly, write_stats

__all__ = [
    "REQUEST_COLUMNS",
    "Rejected",
    "event_row",
    "write_events",
    "write_hourly",
    "write_rejected",
    "write_stats",
]
