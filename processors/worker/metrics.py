"""Prometheus metrics of one Faust worker, and its stuck-partition check.

The worker's health for an operator (docs/deploy.md, "Health"): per-partition
lag, what it folded (events counted, duplicates, replays, invalid, outside
the window), what it read again or left for another worker, batch sizes,
and when it last published stats. The app (``app.py``) calls three hooks:
``on_batch`` per batch, ``on_fold`` with the ``FoldStats`` of each fold run,
``on_publish`` per publication; ``watch`` hands over its plain counters,
read at scrape time; ``install`` adds the timer that reads each held
partition's offsets and feeds the pure ``StuckDetector`` (``stuck.py``).

Each instance registers in its own ``CollectorRegistry`` unless given one
(as ``collector/metrics.py`` does), so tests and several workers in one
process never collide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from processors.worker import faust_private as fp
from processors.worker.fold import FoldStats
from processors.worker.stuck import StuckDetector, Verdict
from schemas.settings import Settings

__all__ = ["WorkerMetrics", "health_tick_s"]

log = logging.getLogger(__name__)

P = "telemetry_worker"
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1_000)
_RUN_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)


class _Counters(Protocol):
    """What the app's ``WorkerCounters`` offers (read at scrape time)."""

    fenced: int
    reread: int


def health_tick_s(window_s: float) -> float:
    """How often the stuck check runs: several times per window, at most every 5 s."""
    return min(5.0, max(0.5, window_s / 4))


class WorkerMetrics:
    """Counters are totals since the worker started; gauges are set by the health timer."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        stats_interval_s: float = 30.0,
        stuck_after_s: float = 120.0,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        part = ["partition"]
        self.folded = Counter(
            f"{P}_events_folded", "events counted into the stats", part, registry=r
        )
        self.duplicates = Counter(
            f"{P}_duplicates", "events dropped as copies of one already counted", part, registry=r
        )
        self.replayed = Counter(
            f"{P}_replayed",
            "events redelivered after a crash or rebalance, already in their bucket",
            part,
            registry=r,
        )
        self.outside_window = Counter(
            f"{P}_outside_window", "events older than the 7-day window", part, registry=r
        )
        self.invalid = Counter(
            f"{P}_invalid", "lines of the events topic that are not valid events", part, registry=r
        )
        self.batch_records = Histogram(
            f"{P}_batch_records",
            "Kafka records per batch the agent takes",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.run_events = Histogram(
            f"{P}_run_events",
            "events per fold run (one partition's records of a batch, or a run read again)",
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.published_rows = Counter(
            f"{P}_published_rows", "rows published for the sink", ["kind"], registry=r
        )
        self.publish_failures = Counter(
            f"{P}_publish_failures",
            "publications not acknowledged in time (their rows are published again)",
            registry=r,
        )
        self.last_publication = Gauge(
            f"{P}_last_publication_timestamp_seconds",
            "Unix time of the last stats publication",
            registry=r,
        )
        self.stats_interval = Gauge(
            f"{P}_stats_interval_seconds", "seconds between stats publications", registry=r
        )
        self.stats_interval.set(stats_interval_s)
        self.lag = Gauge(
            f"{P}_lag",
            "records of a held partition not yet folded and committed (end offset - committed)",
            part,
            registry=r,
        )
        self.end_offset = Gauge(
            f"{P}_end_offset", "end offset (high watermark) of a held partition", part, registry=r
        )
        self.committed_offset = Gauge(
            f"{P}_committed_offset",
            "the group's committed offset of a held partition",
            part,
            registry=r,
        )
        self.partitions_held = Gauge(
            f"{P}_partitions_held", "partitions of the events topic this worker holds", registry=r
        )
        self.partitions_stuck = Gauge(
            f"{P}_partitions_stuck",
            "held partitions with lag and nothing folded for the stuck window",
            registry=r,
        )
        self.stuck_total = Counter(
            f"{P}_stuck_partitions",
            "times a held partition became stuck (lag, nothing folded for the window)",
            registry=r,
        )
        self.detector = StuckDetector(stuck_after_s)
        #: Events handled per partition, whatever the outcome: the detector's progress.
        self._handled: dict[int, int] = {}
        self._gauged: set[int] = set()

    @classmethod
    def for_settings(cls, settings: Settings) -> WorkerMetrics:
        return cls(
            stats_interval_s=settings.stats_interval_s,
            stuck_after_s=settings.worker_stuck_after_s,
        )

    # ------------------------------------------------------------------ hooks

    def watch(self, counters: _Counters) -> None:
        """Expose the app's plain counters that have no hook of their own, read when scraped."""
        self.registry.register(_CountersCollector(counters))

    def on_batch(self, records: int) -> None:
        self.batch_records.observe(records)

    def on_fold(self, partition: int, stats: FoldStats) -> None:
        """One fold run's outcome (``fold_records``' return value)."""
        label = str(partition)
        invalid = len(stats.invalid)
        for metric, n in (
            (self.folded, stats.counted),
            (self.duplicates, stats.duplicates),
            (self.replayed, stats.replayed),
            (self.outside_window, stats.outside_window),
            (self.invalid, invalid),
        ):
            metric.labels(label).inc(n)
        handled = stats.counted + stats.duplicates + stats.replayed + stats.outside_window + invalid
        self.run_events.observe(handled)
        self._handled[partition] = self._handled.get(partition, 0) + handled

    def on_publish_failed(self) -> None:
        self.publish_failures.inc()

    def on_publish(self, stats_rows: int, hourly_rows: int) -> None:
        self.published_rows.labels("stats").inc(stats_rows)
        self.published_rows.labels("hourly").inc(hourly_rows)
        self.last_publication.set(time.time())

    # ------------------------------------------------------------------ offsets

    def observe(
        self,
        offsets: dict[int, tuple[int | None, int | None]],
        *,
        now: float,
        moving: bool,
    ) -> list[Verdict]:
        """Set the lag gauges from ``{partition: (end offset, committed)}`` and judge stalls.

        Returns the verdicts (already logged and counted) for tests.
        """
        self.detector.retain(offsets)
        gauged: set[int] = set()
        verdicts = []
        for partition, (end, committed) in sorted(offsets.items()):
            if end is not None and committed is not None:
                label = str(partition)
                self.lag.labels(label).set(max(0, end - committed))
                self.end_offset.labels(label).set(end)
                self.committed_offset.labels(label).set(committed)
                gauged.add(partition)
            verdict = self.detector.observe(
                partition, end, committed, self._handled.get(partition, 0), now, moving=moving
            )
            if verdict is None:
                continue
            if verdict.kind == "stuck":
                self.stuck_total.inc()
            log.warning("%s", verdict.message())
            verdicts.append(verdict)
        for gone in self._gauged - gauged:  # revoked, or its offsets unknown now
            for g in (self.lag, self.end_offset, self.committed_offset):
                g.remove(str(gone))
        self._gauged = gauged
        self.partitions_held.set(len(offsets))
        self.partitions_stuck.set(len(self.detector.stuck))
        return verdicts

    def attach(self, app: Any, topic: str, counters: _Counters) -> None:
        """Wire into a Faust app: its plain counters, and the health timer.

        The timer reads each held partition's offsets, sets the lag gauges
        and feeds the stuck check, every ``health_tick_s``.
        """
        self.watch(counters)

        @app.timer(health_tick_s(self.detector.window_s))
        async def health() -> None:
            moving = fp.rebalancing(app) or not fp.flow_active(app)
            self.observe(held_offsets(app, topic), now=time.monotonic(), moving=moving)


def held_offsets(app: Any, topic: str) -> dict[int, tuple[int | None, int | None]]:
    """``{partition: (end offset, committed offset)}`` of the partitions of ``topic`` held.

    Both from the consumer's memory, no request to the broker: the end offset
    is the high watermark of the last fetch response, the committed offset
    what the group committed (read at assignment, then each of this worker's
    commits; ``faust_private.known_committed``). An empty partition never
    committed counts as at 0; any other partition never committed, as
    unknown.
    """
    out: dict[int, tuple[int | None, int | None]] = {}
    for tp in app.consumer.assignment():
        if tp.topic != topic:
            continue
        try:
            end = fp.highwater(app, tp)
        except Exception:  # not assigned any more (a rebalance began meanwhile)
            end = None
        position = fp.known_committed(app, tp)
        if position is None and end == 0:
            position = 0  # an empty log, never committed: nothing to fold
        out[tp.partition] = (
            int(end) if end is not None else None,
            int(position) if position is not None else None,
        )
    return out


class _CountersCollector(Collector):
    """The app's counters without a hook: events fenced off, records read again."""

    def __init__(self, counters: _Counters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            f"{P}_fenced_events",
            "events left unacknowledged for their partition's new owner during a rebalance",
            value=self.counters.fenced,
        )
        yield CounterMetricFamily(
            f"{P}_reread_records",
            "Kafka records the consumer skipped, read again straight from Kafka",
            value=self.counters.reread,
        )
