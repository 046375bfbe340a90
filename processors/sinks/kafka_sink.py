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
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processors.clickhouse import ClickHouse
from processors.kafka_io import unreachable
from processors.sinks.rejected import Rejected, write_rejected
from processors.sinks.requests import write_events
from schemas.codec import decode_event
from schemas.dead_letter import UnreadableDeadLetter, decode_dead_letter
from schemas.errors import InvalidEvent, OperationalError
from schemas.event import RequestEvent
from schemas.event_record import UnreadableRecord, record_lines
from schemas.settings import Settings
from schemas.stats import HOURLY_COLUMNS, STATS_COLUMNS, decode_row

if TYPE_CHECKING:
    from processors.sinks.metrics import SinkMetrics

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
    #: Newest ``as_of`` of the stats rows stored (Unix time; 0 before any).
    newest_stats_as_of: float = 0.0


def _from_dlq(value: bytes, source: str) -> Rejected:
    """A dead-letter record as a row of ``telemetry.rejected`` (``schemas.dead_letter``).

    The codec reads the one format and the two older ones by their keys; a
    record it cannot read is kept whole (redacted, like any rejected input)
    with the reason.
    """
    try:
        letter = decode_dead_letter(value)
    except UnreadableDeadLetter as exc:
        return Rejected(source, "dead-letter", "$", f"unreadable dead-letter record: {exc}", value)
    return Rejected(
        letter.source or source, letter.location, letter.field, letter.reason, letter.raw
    )


def _decode_record(tp: Any, m: Any, events: list[RequestEvent], rejects: list[Rejected]) -> None:
    """One events-topic record: each of its lines an event, or a reject (docs/record-format.md).

    A bad line is rejected on its own (its neighbours are still stored), located
    by ``partition P offset O line L`` (``line`` only when the record holds more
    than one event); a record whose headers name another format, or that holds
    no event at all, is rejected whole.
    """
    source = f"kafka:{tp.topic}"
    where = f"partition {tp.partition} offset {m.offset}"
    try:
        lines = record_lines(m.value, m.headers)
    except UnreadableRecord as exc:
        rejects.append(
            Rejected(source, where, exc.field, f"{exc.field}: {exc.rule}", m.value or b"")
        )
        return
    if not lines:  # a tombstone or blank value: nothing to store, but say so
        rejects.append(Rejected(source, where, "$", "$: record holds no event", m.value or b""))
        return
    many = len(lines) > 1
    for i, line in enumerate(lines, 1):
        try:
            events.append(decode_event(line))
        except InvalidEvent as exc:
            at = f"{where} line {i}" if many else where
            rejects.append(Rejected(source, at, exc.field, exc.reason, line))


def _write_batch(
    ch: ClickHouse, settings: Settings, batch: dict[Any, list[Any]], c: SinkCounters
) -> None:
    events: list[RequestEvent] = []
    rejects: list[Rejected] = []
    stats: dict[tuple[str, str], tuple[Any, ...]] = {}
    hourly: dict[tuple[str, str, Any], tuple[Any, ...]] = {}
    for tp, messages in batch.items():
        for m in messages:
            if tp.topic == settings.topic:
                _decode_record(tp, m, events, rejects)
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
    if stats:
        newest = max(row[2] for row in stats.values()).timestamp()
        c.newest_stats_as_of = max(c.newest_stats_as_of, newest)
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
    metrics: SinkMetrics | None = None,
) -> SinkCounters:
    """Consume, write, commit until ``stop`` is set.

    A broker that goes away is waited for: fetch and commit errors that
    waiting can cure are retried with backoff (one log line when the wait
    starts, one every 30 s while it lasts, one when it ends), and ``stop``
    ends any wait. A batch's offsets are committed only after its rows are
    stored, and only its own offsets (never the consumer's position): a
    commit the group refuses after a rebalance is dropped, and the batch is
    read again and deduplicated.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaConnectionError

    c = counters or SinkCounters()
    if metrics is not None:
        metrics.watch(c)
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
        await _stop_consumer(consumer)
        raise unreachable(bootstrap, exc) from None
    try:
        while not stop.is_set():
            batch = await _fetch(consumer, stop)
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
            offsets = _next_offsets(batch)
            if not await _commit(consumer, offsets, stop):
                return c  # stopping: the batch is read again next start (deduplicated)
            if metrics is not None:
                metrics.on_batch(sum(map(len, batch.values())), c, consumer, offsets)
            if on_batch:
                on_batch(c)
    finally:
        await _stop_consumer(consumer)
    return c


#: While the broker is away: the first log line after this long, then one every
#: ``_WAIT_LOG_EVERY_S``.
_WAIT_LOG_AFTER_S = 5.0
_WAIT_LOG_EVERY_S = 30.0
#: Longest wait for the consumer to leave the group and close on the way out.
_STOP_TIMEOUT_S = 3.0


def _next_offsets(batch: dict[Any, list[Any]]) -> dict[Any, int]:
    """What to commit for a stored batch: one past its last message, per partition."""
    return {tp: max(m.offset for m in messages) + 1 for tp, messages in batch.items() if messages}


def _curable(exc: BaseException) -> bool:
    """Whether waiting for the broker can cure a Kafka error (a connection, a timeout)."""
    from aiokafka.errors import KafkaError, KafkaTimeoutError

    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, TimeoutError | OSError)


class _Wait:
    """One stretch of waiting for the broker, with bounded log lines."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since = time.monotonic()
        self.logged_at: float | None = None
        self.pause = 0.5

    def tick(self, error: BaseException | None = None) -> None:
        now = time.monotonic()
        if now - self.since < _WAIT_LOG_AFTER_S and error is None:
            return
        if self.logged_at is None or now - self.logged_at >= _WAIT_LOG_EVERY_S:
            self.logged_at = now
            cause = f" ({type(error).__name__}: {error})" if error is not None else ""
            log.warning(
                "Kafka: %s waiting for the broker for %.0f s%s", self.what, now - self.since, cause
            )

    def done(self) -> None:
        if self.logged_at is not None:
            log.warning(
                "Kafka: %s done after %.0f s: the broker is back",
                self.what,
                time.monotonic() - self.since,
            )

    async def backoff(self, stop: asyncio.Event) -> bool:
        """Pause before the next attempt; False if ``stop`` was set meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.pause)
        self.pause = min(self.pause * 2, _BACKOFF_MAX_S)
        return not stop.is_set()


async def _until_stopped(aw: Any, stop: asyncio.Event, wait: _Wait) -> tuple[bool, Any]:
    """Run ``aw`` until it ends (True, its result) or ``stop`` is set first (False, None)."""
    task = asyncio.ensure_future(aw)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait(
                {task, stopping}, timeout=_WAIT_LOG_AFTER_S, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                return True, task.result()
            if stopping in done:
                return False, None
            wait.tick()  # still waiting (aiokafka retries inside while the broker is away)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)


async def _fetch(consumer: Any, stop: asyncio.Event) -> dict[Any, list[Any]]:
    """The next batch (empty after 0.3 s without messages); fetch errors waited out."""
    wait: _Wait | None = None
    while not stop.is_set():
        try:
            batch: dict[Any, list[Any]] = await consumer.getmany(
                timeout_ms=300, max_records=MAX_BATCH
            )
        except Exception as exc:
            if not _curable(exc):
                raise
            wait = wait or _Wait("fetching")
            wait.tick(exc)
            if not await wait.backoff(stop):
                break
            continue
        if wait is not None:
            wait.done()
        return batch
    return {}


async def _commit(consumer: Any, offsets: dict[Any, int], stop: asyncio.Event) -> bool:
    """Commit a stored batch's offsets, retried until done; False if ``stop`` came first."""
    from aiokafka.errors import CommitFailedError, IllegalStateError

    wait = _Wait("committing offsets")
    while True:
        try:
            finished, _ = await _until_stopped(consumer.commit(offsets), stop, wait)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (a rebalance after the broker came back): these
            # partitions restart from their last commit, and the rows stored
            # since are read again and absorbed by the dedup.
            log.warning("Kafka: offsets not committed, the batch will be read again: %s", exc)
            wait.done()
            return True
        except Exception as exc:
            if not _curable(exc):
                raise
            wait.tick(exc)
            if not await wait.backoff(stop):
                return False
            continue
        if finished:
            wait.done()
        return finished


async def _stop_consumer(consumer: Any) -> None:
    """``consumer.stop()``, bounded, without the CancelledError aiokafka leaks.

    With the broker away, aiokafka 0.14's fetcher re-raises the cancellation
    of its own fetch task from ``stop()``; that is not a cancellation of the
    sink, which is only stopping.
    """
    task = asyncio.ensure_future(consumer.stop())
    try:
        done, _ = await asyncio.wait({task}, timeout=_STOP_TIMEOUT_S)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        log.warning("Kafka: the consumer did not close within %.0f s", _STOP_TIMEOUT_S)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("Kafka: closing the consumer failed: %s", task.exception())
