"""Prometheus metrics of one emitter (and of the HTTP service built on it).

Every emitter registers its metrics in its own ``CollectorRegistry`` unless it
is given one, so two emitters in a process (or a test suite) never collide.
Pass ``registry=prometheus_client.REGISTRY`` to join the process-wide default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["EmitterMetrics", "IngestMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EmitterMetrics:
    """Counters are totals since the emitter was built; gauges are read when scraped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "telemetry_emitter"
        self.emitted = Counter(
            f"{p}_events_emitted", "events given to emit() or deliver()", registry=r
        )
        self.sent = Counter(f"{p}_events_sent", "events acknowledged by Kafka", registry=r)
        self.spooled = Counter(
            f"{p}_events_spooled", "events written to the disk spool", registry=r
        )
        self.replayed = Counter(
            f"{p}_events_replayed", "spooled events acknowledged by Kafka on replay", registry=r
        )
        self.dropped = Counter(
            f"{p}_events_dropped", "events dropped (spool past its size bound)", registry=r
        )
        self.invalid = Counter(f"{p}_events_invalid", "events that failed validation", registry=r)
        self.dead_lettered = Counter(
            f"{p}_dead_letters_sent", "dead-letter records acknowledged by Kafka", registry=r
        )
        self.batch_failures = Counter(
            f"{p}_batch_failures", "producer batches that failed or timed out", registry=r
        )
        self.send_latency = Histogram(
            f"{p}_send_latency_seconds",
            "time from handing a batch to the producer to its acknowledgement",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.buffer_depth = Gauge(f"{p}_buffer_depth", "events waiting in memory", registry=r)
        self.in_flight = Gauge(
            f"{p}_in_flight", "records handed to the producer, not yet acked", registry=r
        )
        self.spool_bytes = Gauge(f"{p}_spool_bytes", "bytes in the spool", registry=r)
        self.spool_records = Gauge(f"{p}_spool_records", "records in the spool", registry=r)
        self.spool_max_bytes = Gauge(
            f"{p}_spool_max_bytes", "the spool's size bound; past it events are dropped", registry=r
        )
        self.broker_up = Gauge(
            f"{p}_broker_up", "1 while the producer delivers, else 0", registry=r
        )

    def bind(
        self,
        *,
        buffer_depth: Callable[[], float],
        in_flight: Callable[[], float],
        spool_bytes: Callable[[], float],
        spool_records: Callable[[], float],
        broker_up: Callable[[], float],
        spool_max_bytes: float = 0.0,
    ) -> None:
        """Gauges read their value from the live objects at scrape time (no hot-path cost)."""
        self.buffer_depth.set_function(buffer_depth)
        self.in_flight.set_function(in_flight)
        self.spool_bytes.set_function(spool_bytes)
        self.spool_records.set_function(spool_records)
        self.broker_up.set_function(broker_up)
        self.spool_max_bytes.set(spool_max_bytes)


class IngestMetrics:
    """Metrics of the HTTP ingest service, in the same registry as its emitter's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "telemetry_ingest"
        self.requests = Counter(
            f"{p}_requests",
            "HTTP requests to POST /v1/events by status code",
            ["code"],
            registry=registry,
        )
        self.events = Counter(
            f"{p}_events", "events received over HTTP by outcome", ["outcome"], registry=registry
        )
        self.latency = Histogram(
            f"{p}_request_seconds",
            "time to answer POST /v1/events",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


def serve_metrics(registry: CollectorRegistry, *, host: str, port: int) -> int:
    """Serve ``registry`` as Prometheus text on ``http://host:port/metrics``; return the port.

    For processes without an HTTP server of their own (the worker, the sink):
    prometheus_client's server, on a daemon thread, so it never holds up an
    exit. Port 0 takes a free port, so several processes on one machine
    never clash; the caller logs the port it got.
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_port)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound
