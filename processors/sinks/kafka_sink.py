"""The sink: Kafka topics into ClickHouse, offsets committed only after rows are stored.

One consumer group reads the raw events, the dead-letter topic and the
workers' published stats and writes them in batches (dead letters land in
``telemetry.rejected``, so analysts see rejected input in one place). A
ClickHouse outage pauses the loop (the same batch is retried with backoff)
and never commits past unwritten rows; a crash after an insert but before the
commit replays the batch, which the raw-event dedup and the versioned stats
tables absorb.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from processors.clickhouse import ClickHouse
from processors.kafka_io import unreachable
from processors.sinks.rejected import Rejected, write_rejected
from processors.sinks.requests import write_events
from schemas.codec import decode_event
from schemas.errors import InvalidEvent, OperationalError
from schemas.settings import Settings
from schemas.stats import HOURLY_COLUMNS, STATS_COLUMNS, decode_row

__all__ = ["SinkCounters", "run_sink"]

log = logging.getLogger(__name__)
MAX_BATCH = 20_000
_BACKOFF_MAX_S = 30.0


@dataclass(slots=True)
class SinkCounters:
    events_seen: int = 0
    events_stored: int = 0
    rejected: int = 0
    stats_rows: int = 0
    hourly_rows: int = 0
    batches: int = 0
    retries: int = 0
    last_error: str | None = None


def _from_dlq(value: bytes, source: str) -> Rejected:
    """A dead-letter record (from `telemetry ingest` or the HTTP collector) as a row."""
    try:
        doc = orjson.loads(value)
        location = doc.get("location") or f"index {doc.get('index', '?')}"
        return Rejected(
            str(doc.get("source") or source),
            str(location),
            str(doc.get("field", "$")),
            str(doc.get("reason", "")),
            str(doc.get("raw", "")).encode(),
        )
    except (orjson.JSONDecodeError, AttributeError):
        return Rejected(source, "dead-letter", "$", "unreadable dead-letter record", value)


def _write_batch(
    ch: ClickHouse, settings: Settings, batch: dict[Any, list[Any]], c: SinkCounters
) -> None:
    events = []
    rejects = []
    stats: dict[tuple[str, str], tuple[Any, ...]] = {}
    hourly: dict[tuple[str, str, Any], tuple[Any, ...]] = {}
    for tp, messages in batch.items():
        for m in messages:
            if tp.topic == settings.topic:
                try:
                    events.append(decode_event(m.value))
                except InvalidEvent as exc:
                    where = f"partition {tp.partition} offset {m.offset}"
                    rejects.append(
                        Rejected(f"kafka:{tp.topic}", where, exc.field, exc.reason, m.value)
                    )
            elif tp.topic == settings.dlq_topic:
                rejects.append(_from_dlq(m.value, f"kafka:{tp.topic}"))
            elif tp.topic == settings.stats_topic:
                row = decode_row(m.value, STATS_COLUMNS)
                prev = stats.get((row[0], row[1]))
                if prev is None or prev[2] <= row[2]:
                    stats[(row[0], row[1])] = row
            elif tp.topic == settings.hourly_topic:
                row = decode_row(m.value, HOURLY_COLUMNS)
                prev = hourly.get((row[0], row[1], row[2]))
                if prev is None or prev[3] <= row[3]:
                    hourly[(row[0], row[1], row[2])] = row
    write_rejected(ch, rejects)
    stored = write_events(ch, events)
    ch.insert("telemetry.model_stats_7d_versions", list(stats.values()), STATS_COLUMNS)
    ch.insert("telemetry.model_stats_hourly_versions", list(hourly.values()), HOURLY_COLUMNS)
    c.events_seen += len(events)
    c.events_stored += stored
    c.rejected += len(rejects)
    c.stats_rows += len(stats)
    c.hourly_rows += len(hourly)
    c.batches += 1


async def run_sink(
    settings: Settings,
    ch: ClickHouse,
    *,
    bootstrap: str,
    group_id: str = "telemetry-sink",
    stop: asyncio.Event | None = None,
    counters: SinkCounters | None = None,
    on_batch: Callable[[SinkCounters], None] | None = None,
) -> SinkCounters:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaConnectionError

    c = counters or SinkCounters()
    stop = stop or asyncio.Event()
    consumer = AIOKafkaConsumer(
        settings.topic,
        settings.dlq_topic,
        settings.stats_topic,
        settings.hourly_topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_BATCH,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        await consumer.stop()
        raise unreachable(bootstrap, exc) from None
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300, max_records=MAX_BATCH)
            if not batch:
                continue
            delay = 0.5
            while True:
                try:
                    await asyncio.to_thread(_write_batch, ch, settings, batch, c)
                    c.last_error = None
                    break
                except OperationalError as exc:
                    # Pause, keep the batch, never commit past unwritten rows.
                    c.retries += 1
                    c.last_error = str(exc)
                    log.warning("ClickHouse write failed (retrying in %.1fs): %s", delay, exc)
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                        return c  # stopping: uncommitted batch is read again next start
                    except TimeoutError:
                        pass
                    delay = min(delay * 2, _BACKOFF_MAX_S)
            await consumer.commit()
            if on_batch:
                on_batch(c)
    finally:
        await consumer.stop()
    return c
