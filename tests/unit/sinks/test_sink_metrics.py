"""The sink's Prometheus metrics: totals read from its counters, gauges set per batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from processors.sinks.kafka_sink import SinkCounters
from processors.sinks.metrics import SinkMetrics


class TP(NamedTuple):
    topic: str
    partition: int


class _Consumer:
    """Stands in for aiokafka's consumer: only the high watermark is read."""

    def __init__(self, ends: dict[TP, int | None]) -> None:
        self.ends = ends

    def highwater(self, tp: TP) -> int | None:
        return self.ends[tp]


def test_totals_are_read_from_the_counters_when_scraped() -> None:
    m = SinkMetrics()
    c = SinkCounters()
    m.watch(c)
    c.events_stored, c.rejected, c.stats_rows, c.retries = 90, 4, 12, 2
    r = m.registry
    assert r.get_sample_value("telemetry_sink_rows_written_total", {"table": "requests"}) == 90
    assert r.get_sample_value("telemetry_sink_rows_written_total", {"table": "rejected"}) == 4
    assert (
        r.get_sample_value("telemetry_sink_rows_written_total", {"table": "model_stats_7d"}) == 12
    )
    assert r.get_sample_value("telemetry_sink_write_retries_total") == 2


def test_a_stored_batch_sets_lag_freshness_and_size() -> None:
    m = SinkMetrics()
    c = SinkCounters(newest_stats_as_of=datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    m.watch(c)
    a, b = TP("events", 0), TP("stats", 1)
    m.on_batch(250, c, _Consumer({a: 1_000, b: None}), {a: 900, b: 40})
    r = m.registry
    assert r.get_sample_value("telemetry_sink_lag", {"topic": "events", "partition": "0"}) == 100
    assert r.get_sample_value("telemetry_sink_lag", {"topic": "stats", "partition": "1"}) is None
    assert r.get_sample_value("telemetry_sink_batch_records_sum") == 250
    assert (
        r.get_sample_value("telemetry_sink_stats_as_of_timestamp_seconds") == c.newest_stats_as_of
    )
    assert (r.get_sample_value("telemetry_sink_last_write_timestamp_seconds") or 0) > 0
