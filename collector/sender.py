"""The sender: records in, Kafka batches out, every record's fate reported.

One ``AIOKafkaProducer`` (idempotent, ``acks=all``, compressed) fed through
``create_batch``/``send_batch``: the sender groups records by partition itself
(murmur2 of the key, as the Java client and aiokafka's default partitioner do,
with the partition of each key cached). A batch is closed before it is shipped
(nothing is added to it afterwards), so the producer sends it at once instead of
letting it linger for records that could never join it.

Records for the events topic are not sent one Kafka record each: the values of
one partition in one ``send`` call are packed into as few Kafka records as
``schemas.event_record.pack_lines`` allows (NDJSON, at most ``MAX_RECORD_BYTES``
each, no key, ``RECORD_HEADERS``; the format is docs/record-format.md). Records
for any other topic (dead letters) stay one Kafka record each, with their key.
Either way the per-record Python work is small: a list append, and one
``BatchBuilder.append`` per Kafka record.

Every record handed to ``send`` ends in exactly one of two places: acknowledged
by Kafka, or passed to ``on_undelivered`` (the emitter spools it). A packed
Kafka record is acknowledged or lost as a whole, and so are the records in it:
the sender keeps, per producer batch, the input records it carries, and reports
them (never the packed value) either way. An input record of the events topic
may itself carry several events (the emitter packs valid dicts per model);
counts (in flight, sent, the futures' results) are of events. ``send``
returns one future per producer batch that resolves (to the number of events
Kafka acknowledged: all or none) only after that has happened, so a caller
that awaits them knows its records are durable.

Health: the sender is *healthy* while batches are acknowledged. A batch that
fails, or is not acknowledged within ``stall_timeout_s``, makes it unhealthy;
callers then spool instead of sending. A batch still unacknowledged after
``abandon_timeout_s`` (default twice the stall timeout) is failed on purpose and
spooled, so that no caller waits on a dead broker (aiokafka would retry it until
the broker is back). ``recover()`` (called by the emitter's supervisor) brings
the sender back: it waits for the batches in the producer to resolve, replaces
the producer if a batch failed, and probes the cluster's metadata.

Duplicates: a batch is spooled only when Kafka did not acknowledge it. If the
broker had written it all the same (an ack lost with a dying connection, or a
broker slower than the abandon timeout), the replay writes it a second time;
``event_id`` dedup downstream removes it. The outage tests count these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_lz4, has_zstd
from aiokafka.errors import KafkaError, KafkaTimeoutError

from collector.encoding import Record, events_in
from collector.metrics import EmitterMetrics
from schemas.event_record import MAX_RECORD_BYTES, RECORD_HEADERS, pack_ranges, partition_for

__all__ = ["DEFAULT_PRODUCER_OPTIONS", "KafkaSender", "default_compression"]

log = logging.getLogger(__name__)


def default_compression() -> str | None:
    """zstd, else lz4 (both need aiokafka's optional ``cramjam``), else none.

    gzip is left out on purpose: it costs more CPU than the network it saves
    on a gateway node.
    """
    if has_zstd():
        return "zstd"
    if has_lz4():
        return "lz4"
    return None


DEFAULT_PRODUCER_OPTIONS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 20,
    "max_batch_size": 512 * 1024,
    "request_timeout_ms": 15_000,
    "retry_backoff_ms": 200,
    "metadata_max_age_ms": 60_000,
}


def _fail_queued(producer: AIOKafkaProducer, exc: Exception) -> None:
    """Fail every batch the producer still holds (our callbacks then spool them).

    aiokafka has no public call for this; ``fail_all`` is what its own sender uses when
    it gives up. The batches' drain waiters get the exception too: it is read here so
    that asyncio does not log "exception was never retrieved" for them.
    """
    with contextlib.suppress(Exception):
        acc = producer._message_accumulator
        batches = [b for queue in acc._batches.values() for b in queue]
        batches += list(acc._pending_batches)
        acc.fail_all(exc)
        for batch in batches:
            waiter = batch._drain_waiter
            if waiter.done() and not waiter.cancelled():
                waiter.exception()


@dataclass(eq=False)
class _Flight:
    records: list[Record]
    topic: str
    started: float
    done: asyncio.Future[int]
    #: events carried (a record of the events topic may carry several)
    events: int


class KafkaSender:
    """Owns the producer; reports each record as acked or undelivered."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        metrics: EmitterMetrics,
        on_undelivered: Callable[[list[Record]], None],
        events_topic: str,
        client_id: str = "telemetry-emitter",
        stall_timeout_s: float = 3.0,
        abandon_timeout_s: float | None = None,
        connect_timeout_s: float = 5.0,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        options = dict(DEFAULT_PRODUCER_OPTIONS)
        options["compression_type"] = default_compression()
        options.update(producer_options or {})
        if options.get("enable_idempotence") is not True or options.get("acks") not in ("all", -1):
            raise ValueError("the emitter needs enable_idempotence=True and acks='all'")
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._options = options
        self._metrics = metrics
        self._on_undelivered = on_undelivered
        self._events_topic = events_topic
        self._stall_timeout_s = stall_timeout_s
        self._abandon_timeout_s = abandon_timeout_s or 2 * stall_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._key_partition: dict[tuple[str, bytes], int] = {}
        self._flights: set[_Flight] = set()
        self._in_flight_records = 0
        self._failed = False
        self.healthy = False
        self.closed = False

    # ------------------------------------------------------------------ state

    @property
    def in_flight(self) -> int:
        return self._in_flight_records

    @property
    def compression(self) -> str | None:
        return self._options.get("compression_type")

    def _degrade(self, why: str) -> None:
        if self.healthy:
            log.warning("Kafka at %s not delivering (%s): spooling", self._bootstrap, why)
        self.healthy = False

    def check_stall(self) -> None:
        """Past the stall timeout without an ack: unhealthy (new records go to the spool).
        Past the abandon timeout: take the batches back from the producer (they are spooled)
        so that nobody waits on a dead broker; the producer is replaced on recovery."""
        if not self._flights:
            return
        age = time.monotonic() - min(f.started for f in self._flights)
        if age > self._stall_timeout_s:
            self._degrade(f"no acknowledgement for {self._stall_timeout_s:.1f} s")
        if age > self._abandon_timeout_s and self._producer is not None and not self._failed:
            log.warning(
                "Kafka at %s: %d records unacknowledged for %.1f s; spooling them",
                self._bootstrap,
                self._in_flight_records,
                age,
            )
            self._failed = True
            _fail_queued(self._producer, KafkaTimeoutError("abandoned: no acknowledgement"))

    # ------------------------------------------------------------------ connect

    async def connect(self) -> bool:
        """Start a fresh producer; True when the cluster answered."""
        if self.closed:
            return False
        await self._drop_producer()
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, client_id=self._client_id, **self._options
        )
        try:
            await asyncio.wait_for(producer.start(), self._connect_timeout_s)
            await asyncio.wait_for(
                self._load_partitions(producer, self._events_topic), self._connect_timeout_s
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            log.info("Kafka at %s unreachable: %s", self._bootstrap, exc or type(exc).__name__)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self._connect_timeout_s)
            return False
        self._producer = producer
        self._failed = False
        self.healthy = True
        log.info("connected to Kafka at %s", self._bootstrap)
        return True

    async def _load_partitions(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        parts = sorted(await producer.partitions_for(topic))
        if self._partitions.get(topic) != parts:
            self._key_partition = {k: v for k, v in self._key_partition.items() if k[0] != topic}
        self._partitions[topic] = parts
        return parts

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # Whatever is still queued fails now (and is spooled by the callbacks) instead
        # of holding stop() until the batches expire.
        _fail_queued(producer, KafkaError("producer replaced"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), self._connect_timeout_s)

    async def recover(self) -> bool:
        """Bring an unhealthy sender back; True when it is healthy again."""
        if self.closed:
            return False
        if self.healthy:
            return True
        if self._flights:
            # Let aiokafka finish its retries first: acked or expired, each resolves.
            await asyncio.wait([f.done for f in self._flights], timeout=self._stall_timeout_s)
            if self._flights:
                return False
        if self._failed or self._producer is None:
            return await self.connect()
        try:
            await asyncio.wait_for(
                self._producer.client.fetch_all_metadata(), self._connect_timeout_s
            )
        except (KafkaError, OSError, TimeoutError):
            return False
        self.healthy = True
        log.warning("Kafka at %s delivers again", self._bootstrap)
        return True

    # ------------------------------------------------------------------ sending

    async def send(self, records: Sequence[Record]) -> list[asyncio.Future[int]]:
        """Hand records to the producer; one future per batch (see module doc)."""
        producer = self._producer
        if not records:
            return []
        if producer is None or not self.healthy:
            self._on_undelivered(list(records))
            return []
        # Group by topic, then key (two dict lookups, no allocation per record); order
        # per key is kept, which is the order Kafka promises.
        by_key: dict[str, dict[bytes, list[Record]]] = {}
        for rec in records:
            keys = by_key.get(rec[0])
            if keys is None:
                keys = by_key[rec[0]] = {}
            group = keys.get(rec[1])
            if group is None:
                keys[rec[1]] = [rec]
            else:
                group.append(rec)
        by_partition: dict[tuple[str, int], list[Record]] = {}
        cache = self._key_partition
        for topic, keys in by_key.items():
            for key, group in keys.items():
                part = cache.get((topic, key))
                if part is None:
                    part = await self._partition_for(producer, topic, key)
                by_partition.setdefault((topic, part), []).extend(group)
        futures: list[asyncio.Future[int]] = []
        for (topic, part), recs in by_partition.items():
            if topic == self._events_topic:
                await self._send_packed(producer, topic, part, recs, futures)
            else:
                await self._send_partition(producer, topic, part, recs, futures)
        return futures

    async def _partition_for(self, producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
        parts = self._partitions.get(topic)
        if parts is None:
            try:
                parts = await asyncio.wait_for(
                    self._load_partitions(producer, topic), self._stall_timeout_s
                )
            except (KafkaError, TimeoutError):
                parts = [0]  # unknown yet: the batch will fail over to the spool
        part = parts[partition_for(key, len(parts))]
        self._key_partition[(topic, key)] = part
        return part

    async def _send_partition(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        part: int,
        recs: list[Record],
        futures: list[asyncio.Future[int]],
    ) -> None:
        batch = producer.create_batch()
        start = 0
        for i, (_, key, value) in enumerate(recs):
            if batch.append(key=key, value=value, timestamp=None) is None:
                if i == start:  # a single record larger than a batch: let send() size it
                    futures.append(await self._ship_single(producer, topic, part, recs[i]))
                    start = i + 1
                    batch = producer.create_batch()
                    continue
                futures.append(await self._ship(producer, topic, part, batch, recs[start:i]))
                batch = producer.create_batch()
                start = i
                batch.append(key=key, value=value, timestamp=None)
        if start < len(recs):
            futures.append(await self._ship(producer, topic, part, batch, recs[start:]))

    async def _send_packed(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        part: int,
        recs: list[Record],
        futures: list[asyncio.Future[int]],
    ) -> None:
        """Events of one partition: NDJSON Kafka records, as few as ``pack_lines`` makes
        (``pack_ranges``: which input records each one carries).

        Each producer batch is shipped with the input records its Kafka records
        carry, so their fate is reported per input record.
        """
        lines = [rec[2] for rec in recs]
        if sum(map(len, lines)) + len(lines) - 1 <= MAX_RECORD_BYTES:
            # The usual case (one request, one linger's worth): a single Kafka record.
            batch = producer.create_batch()
            batch.append(key=None, value=b"\n".join(lines), timestamp=None, headers=RECORD_HEADERS)
            futures.append(await self._ship(producer, topic, part, batch, recs))
            return
        batch = producer.create_batch()
        carried: list[Record] = []
        for start, end in pack_ranges(lines):
            value = b"\n".join(lines[start:end])
            if batch.append(key=None, value=value, timestamp=None, headers=RECORD_HEADERS) is None:
                # The batch is full; it holds at least one Kafka record (a BatchBuilder
                # always takes its first one, whatever its size).
                futures.append(await self._ship(producer, topic, part, batch, carried))
                batch, carried = producer.create_batch(), []
                batch.append(key=None, value=value, timestamp=None, headers=RECORD_HEADERS)
            carried.extend(recs[start:end])
        if carried:
            futures.append(await self._ship(producer, topic, part, batch, carried))

    async def _ship(
        self, producer: AIOKafkaProducer, topic: str, part: int, batch: Any, recs: list[Record]
    ) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        events = events_in(recs) if topic == self._events_topic else len(recs)
        flight = _Flight(recs, topic, time.monotonic(), loop.create_future(), events)
        stale = self._producer is not producer
        if not self.healthy or stale:
            self._finish(flight, None)
            return flight.done
        batch.close()  # nothing is added once shipped: it leaves without lingering
        try:
            fut = await asyncio.wait_for(
                producer.send_batch(batch, topic, partition=part), self._stall_timeout_s
            )
        except (KafkaError, TimeoutError, AssertionError) as exc:
            # Not queued in the producer: safe to spool without risk of a duplicate.
            self._degrade(f"{type(exc).__name__}: {exc}")
            self._finish(flight, None)
            return flight.done
        self._flights.add(flight)
        self._in_flight_records += events
        fut.add_done_callback(lambda f, flight=flight: self._on_batch_done(flight, f))
        return flight.done

    async def _ship_single(
        self, producer: AIOKafkaProducer, topic: str, part: int, rec: Record
    ) -> asyncio.Future[int]:
        batch = producer.create_batch()
        # A BatchBuilder always takes its first record, whatever its size.
        batch.append(key=rec[1], value=rec[2], timestamp=None)
        return await self._ship(producer, topic, part, batch, [rec])

    def _on_batch_done(self, flight: _Flight, fut: asyncio.Future[Any]) -> None:
        if flight not in self._flights:
            return  # already handed back by close()
        self._flights.discard(flight)
        self._in_flight_records -= flight.events
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is None:
            self._metrics.send_latency.observe(time.monotonic() - flight.started)
            if flight.topic == self._events_topic:
                self._metrics.sent.inc(flight.events)
            else:
                self._metrics.dead_lettered.inc(flight.events)
            flight.done.set_result(flight.events)
            return
        self._failed = True
        self._metrics.batch_failures.inc()
        self._degrade(f"{type(exc).__name__}: {exc}")
        self._finish(flight, exc)

    def _finish(self, flight: _Flight, exc: BaseException | None) -> None:
        """An undelivered batch: hand its records back, then resolve its future."""
        try:
            self._on_undelivered(flight.records)
        finally:
            if not flight.done.done():
                flight.done.set_result(0)

    # ------------------------------------------------------------------ shutdown

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False on timeout."""
        if self._flights:
            await asyncio.wait([f.done for f in self._flights], timeout=max(timeout, 0.0))
        return not self._flights

    async def close(self, timeout: float) -> None:
        """Flush within ``timeout``; what is still unacknowledged is handed back (spooled)."""
        if self.closed:
            return
        await self.flush(timeout)
        self.closed = True
        self.healthy = False
        await self._drop_producer()
        # Anything fail_all could not reach (already in a request) resolves here.
        for flight in list(self._flights):
            self._flights.discard(flight)
            self._in_flight_records -= flight.events
            self._finish(flight, None)
