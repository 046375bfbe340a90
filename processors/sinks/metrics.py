"""Prometheus metrics of the sink (`telemetry worker --sink`).

Rows written per table, write retries (a ClickHouse outage), batch sizes,
the time of the last stored batch, the newest stats it stored (``as_of``:
how fresh the model pages can be) and its consumer lag per topic partition.
The totals are read at scrape time from the sink's own ``SinkCounters``;
``run_sink`` calls ``on_batch`` after each stored and committed batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from processors.sinks.kafka_sink import SinkCounters

__all__ = ["SinkMetrics"]

P = "telemetry_sink"
_BATCH_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000)


class SinkMetrics:
    """Counters are totals since the sink started; gauges are set after each batch."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.batch_records = Histogram(
            f"{P}_batch_records",
            "Kafka records per stored batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.last_write = Gauge(
            f"{P}_last_write_timestamp_seconds",
            "Unix time the last batch was stored and committed",
            registry=r,
        )
        self.stats_as_of = Gauge(
            f"{P}_stats_as_of_timestamp_seconds",
            "newest as_of of the stats rows stored (Unix time): the model pages' freshness",
            registry=r,
        )
        self.lag = Gauge(
            f"{P}_lag",
            "records of a topic partition not yet stored (end offset - committed)",
            ["topic", "partition"],
            registry=r,
        )
        self._counters: SinkCounters | None = None

    def watch(self, counters: SinkCounters) -> None:
        """Expose ``counters`` (rows written, retries, batches), read at scrape time."""
        if self._counters is None:
            self.registry.register(_SinkCollector(counters))
        self._counters = counters

    def on_batch(
        self,
        records: int,
        counters: SinkCounters,
        consumer: Any,
        committed: Mapping[Any, int],
    ) -> None:
        """A batch of ``records`` is stored and ``committed`` (``{tp: next offset}``)."""
        self.batch_records.observe(records)
        self.last_write.set(time.time())
        if counters.newest_stats_as_of:
            self.stats_as_of.set(counters.newest_stats_as_of)
        for tp, offset in committed.items():
            try:
                end = consumer.highwater(tp)
            except Exception:  # revoked meanwhile
                end = None
            if end is not None:
                self.lag.labels(tp.topic, str(tp.partition)).set(max(0, int(end) - offset))


class _SinkCollector(Collector):
    def __init__(self, counters: SinkCounters) -> None:
        self.c = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        rows = CounterMetricFamily(
            f"{P}_rows_written", "rows written to ClickHouse, per table", labels=["table"]
        )
        rows.add_metric(["requests"], self.c.events_stored)
        rows.add_metric(["rejected"], self.c.rejected)
        rows.add_metric(["model_stats_7d"], self.c.stats_rows)
        rows.add_metric(["model_stats_hourly"], self.c.hourly_rows)
        yield rows
        yield CounterMetricFamily(
            f"{P}_events_read",
            "valid events read from the events topic (stored, or already stored and dropped)",
            value=self.c.events_seen,
        )
        yield CounterMetricFamily(
            f"{P}_write_retries",
            "ClickHouse writes that failed and were retried (the batch is kept)",
            value=self.c.retries,
        )
        yield CounterMetricFamily(
            f"{P}_batches", "batches stored and committed", value=self.c.batches
        )
