"""The Faust app: topics, tables and timers wired to the partition bookkeeping.

Guarantee: at-least-once delivery with an exactly-once *effect*. Faust's own
``exactly_once`` guarantee is not trusted (see docs/architecture.md,
"Exactly-once effect", for the rules and the Faust behaviours behind them).
The rules live in ``bookkeeper.PartitionBook``, which knows nothing of
Faust; this module is the wiring: ``FaustAdapter`` (its ``FaustSide``),
the agent and the timers that call it, and the two table subclasses whose
hooks keep our changelog writes (``PendingWrites``) and refuse to restore an
older bucket record. Faust's private names are reached through
``faust_private`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import TP

from processors.aggregate import BucketKey, HourBucket
from processors.worker import faust_private as fp
from processors.worker.batch_bound import BatchBound
from processors.worker.bookkeeper import (
    Delivered,
    PartitionBook,
    Tables,
    WorkerCounters,
    restorable,
)
from processors.worker.changelog_outbox import ChangelogOutbox
from processors.worker.fold import Record
from processors.worker.gap_reader import GapReader
from processors.worker.heap import HeapTrimmer, fix_mmap_threshold
from processors.worker.metrics import WorkerMetrics
from processors.worker.pending_writes import PendingWrites
from processors.worker.records import (
    NEXT_OFFSET_KEY,
    BucketRecord,
    decode_bucket_key,
    encode_bucket_key,
)
from processors.worker.rolling_view import RollingView
from processors.worker.row_publisher import PublishFailed, RowPublisher
from processors.worker.tables import BUCKETS, SEEN
from schemas.settings import Settings
from schemas.stats import encode_row

__all__ = ["FaustAdapter", "WorkerCounters", "create_app"]

log = logging.getLogger(__name__)

#: RocksDB options of each table partition's database. Faust's defaults
#: (a 2 GiB block cache and up to 3 memtables of 64 MiB per database) are
#: sized for a machine per worker; a worker holds 2 tables x its partitions.
#: Our reads go through the decoded-bucket cache, and a week of 1,000 keys is
#: ~20 MB on disk, so small ones suffice: in bench/state_size.py (1,000 keys x
#: 168 h) 2 MiB memtables and caches, with batches cut by bytes, left the
#: worker at 466 MB RSS (620 MB before both changes).
ROCKSDB_OPTIONS = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 2 * 1024 * 1024,
}
#: A batch ends at this many Kafka records, or at a bound on its record
#: values' bytes, whichever comes first: our producers put up to thousands of
#: events in a record (docs/record-format.md), other producers one, and a
#: batch should hold tens of thousands of events either way. The byte bound
#: follows the bucket writes a batch causes (``BatchBound``): it starts at
#: BATCH_MAX_BYTES and moves within [BATCH_LOW_BYTES, BATCH_HIGH_BYTES] so
#: that a batch writes back about BATCH_WRITES buckets (bounded memory and
#: fold time, few changelog writes per event, whatever the traffic's shape).
#: Every write is a changelog message Faust holds until the fold yields: a
#: first batch of 16 MiB and 25,000 writes a batch took bench/state_size.py
#: (every event its own bucket) to 316 MB at its peak, 4 MiB and 12,500 to 273.
BATCH_MAX = 1_000
BATCH_MAX_BYTES = 4 * 1024 * 1024
BATCH_LOW_BYTES = 4 * 1024 * 1024
BATCH_HIGH_BYTES = 64 * 1024 * 1024
BATCH_WRITES = 12_500
#: ... or when nothing more arrived this long after the last batch: the
#: longest a live event waits to be folded.
BATCH_WITHIN_S = 0.05
#: Records Faust may fetch ahead of the agent (see ``stream_buffer_maxsize``
#: below): at most 256 MiB of batch records (1 MiB each at most; ~170 MB of
#: records of 2,000 events), the batch being taken apart. Measured in
#: bench/worker_throughput.py on a quiet machine, 1M events: 64 records
#: starved the agent (58,104 events/s net), 256 did not (75,776), Faust's
#: 4,096 gained nothing more (69,398) for up to 4 GiB.
STREAM_BUFFER_RECORDS = 256
#: The most Faust's consumer fetches of one partition in one request
#: (``consumer_max_fetch_size``, aiokafka's ``max_partition_fetch_bytes``).
#: Faust's 1 MiB is one or two of our batch records: the agent then waited
#: for the broker between fetches (busy 63% of a core). Measured in
#: bench/worker_throughput.py, 1M events, 16 MiB against 1 MiB in the same
#: run: live-shaped 172,823 against 108,676 events/s net, week-wide 70,144
#: against 45,328. A fetch response stays under aiokafka's
#: ``fetch_max_bytes`` (50 MiB) whatever the partitions.
FETCH_PARTITION_BYTES = 16 * 1024 * 1024
SEEN_SWEEP_S = 300.0
#: Longest wait for the group's committed offset of a partition.
COMMITTED_TIMEOUT_S = 30.0
#: The hourly series feeds charts: publishing it at most this often keeps a
#: catch-up (every hour of the week dirty at once) from starving the agent.
HOURLY_EVERY_S = 30.0
#: Producer batches (changelog writes, published rows): well under the
#: broker's 1 MB ``message.max.bytes``.
PRODUCER_BATCH_BYTES = 512 * 1024
#: Longest wait for a publication's rows to be acknowledged before they are
#: due again (well under the 10 s a stopping worker has).
PUBLISH_TIMEOUT_S = 5.0


def create_app(
    settings: Settings,
    *,
    bootstrap: str,
    app_id: str | None = None,
    data_dir: Path | None = None,
    metrics: WorkerMetrics | None = None,
) -> faust.App:
    app_id = app_id or settings.worker_id
    datadir = (data_dir or (settings.data_dir / "worker" / app_id)).resolve()
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",  # driven by rocksdict (faust-streaming[rocksdict])
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        producer_acks=-1,
        # Changelog messages leave in batches, not one produce request each.
        producer_linger=0.05,
        # The changelog outbox ships a fold's writes of a partition in a few
        # large batches (Faust's default, 16 KiB, is a few bucket records).
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        web_enabled=False,
        stream_wait_empty=False,
        # Records fetched ahead of the agent, per topic. Faust counts records,
        # not bytes: its default (4,096) of our batch records is up to 4 GiB.
        stream_buffer_maxsize=STREAM_BUFFER_RECORDS,
        consumer_max_fetch_size=FETCH_PARTITION_BYTES,
        # A SIGKILLed worker holds its partitions until its session expires:
        # keep that short so a restart (or a peer) takes over within seconds.
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.worker_session_timeout_s / 4),
        # Crash-only: an exception escaping the agent crashes the worker (exit
        # status 1, see telemetry/commands/worker_cmd.py) instead of leaving a
        # live process with a dead or restarted-from-nowhere agent. Errors
        # waiting can cure (a broker restart) never escape it (gap_reader.py).
        agent_supervisor="mode.CrashingSupervisor",
    )
    counters = WorkerCounters()
    health = metrics or WorkerMetrics.for_settings(settings)
    health.attach(app, settings.topic, counters)  # Prometheus, stuck partitions

    events = app.topic(
        settings.topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    # Stats and hourly rows go out through Faust's own producer, a batch per
    # partition (the topics exist: `telemetry worker` creates them first).
    rows = RowPublisher(lambda: fp.kafka_producer(app), timeout_s=PUBLISH_TIMEOUT_S)
    # A broker outage of minutes holds state writes: wait for it (under
    # Faust's 1,200 s producer request timeout) rather than crash the worker.
    writes = PendingWrites(timeout_s=900.0)
    outbox = ChangelogOutbox(lambda: fp.kafka_producer(app), writes)

    def table(cls: type[TrackedTable], name: str) -> Any:
        added: Any = app.tables.add(
            cls(
                app,
                name=name,
                key_type=bytes,
                value_type=bytes,
                partitions=settings.partitions,
                beacon=app.tables.beacon,
                options=ROCKSDB_OPTIONS,
            )
        )
        added.pending_writes = writes
        added.outbox = outbox
        return added

    buckets = table(BucketsTable, BUCKETS)
    seen = table(TrackedTable, SEEN)
    for checked in (buckets, seen):
        # `telemetry worker` created the changelogs with the events topic's
        # partitions and checked them against the broker before Faust started.
        fp.trust_changelog_partitions(checked, settings.topic)

    def load(key: BucketKey) -> HourBucket | None:
        held = book.cached(key)  # decoded already by the fold
        if held is not None:
            return held.bucket
        raw = fp.table_store(buckets).get(encode_bucket_key(key))
        return BucketRecord.from_bytes(raw).bucket if raw is not None else None

    view = RollingView(load)
    gap_reader = GapReader(bootstrap, settings.topic)
    side = FaustAdapter(
        app, settings.topic, {BUCKETS: buckets, SEEN: seen}, gap_reader, writes, outbox
    )
    book = PartitionBook(
        side,
        reread_max=settings.worker_reread_max,
        note=view.note,
        counters=counters,
        on_fold=health.on_fold,
    )
    assigned: dict[str, Any] = {"tps": None, "hourly_at": 0.0}
    fix_mmap_threshold()  # large blocks (records, a run's columns) unmapped when freed
    heap = HeapTrimmer()

    @seen.on_recover
    async def seen_restored() -> None:
        # Faust calls this once the tables are restored, before it resumes
        # the streams: the next fold rebuilds the memory from the whole table.
        book.tables_restored()

    @app.on_partitions_revoked.connect
    async def settle_before_revoke(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Awaited by Faust before the consumer rejoins the group, so every
        # write of ours is in the changelog before anyone restores it.
        await book.before_revoke()

    def reindex() -> None:
        keys = []
        for raw_key, _ in side.items(BUCKETS):
            if raw_key != NEXT_OFFSET_KEY:
                keys.append(decode_bucket_key(raw_key))
        view.reset(keys)

    @app.agent(events)
    async def fold(stream: Any) -> Any:
        try:
            bound = BatchBound(
                start=BATCH_MAX_BYTES,
                low=min(BATCH_LOW_BYTES, BATCH_MAX_BYTES),
                high=max(BATCH_HIGH_BYTES, BATCH_MAX_BYTES),
                writes=BATCH_WRITES,
            )
            batches = fp.take_weighted(stream, BATCH_MAX, bound, BATCH_WITHIN_S, _record_bytes)
            async for batch in batches:
                health.on_batch(len(batch))
                writes = counters.bucket_writes
                # Leaves unacknowledged what it did not fold, and the whole
                # batch if it fails or is cancelled (take_weighted, like Faust's
                # take_events, acknowledges the buffer even when we leave with
                # an error).
                await book.fold_batch(batch)
                bound.after(
                    sum(_record_bytes(ev.value) for ev in batch),
                    counters.bucket_writes - writes,
                )
                heap.maybe()  # a batch frees thousands of decoded buckets and lines
                yield len(batch)
        finally:
            await gap_reader.close()

    @app.timer(settings.stats_interval_s)
    async def publish() -> None:
        if side.rebalancing():
            # The tables may still be restoring: a view indexed now would miss
            # the buckets of the partitions coming in, and publish short.
            return
        # Indexed again after every assignment *and* every restoration: the
        # assignment changes before Faust restores the tables.
        held = (
            frozenset(app.consumer.assignment()) if app.consumer else frozenset(),
            book.restorations,
        )
        if held != assigned["tps"]:
            assigned["tps"] = held
            reindex()
        hourly_due = time.monotonic() - assigned["hourly_at"] >= max(
            HOURLY_EVERY_S, settings.stats_interval_s
        )
        pub = view.publish(datetime.now(UTC), hourly=hourly_due)
        if hourly_due:
            assigned["hourly_at"] = time.monotonic()
        await book.nudge_idle_partitions()
        book.expire(pub.expired)
        await side.flush_changelog()
        heap.maybe()
        # Logged before the rows leave, with the counts they were computed
        # from: once acknowledged they may be in ClickHouse at once, and a
        # reader of this log must not see the rows before the line.
        log.info(
            "published %d stats rows, %d hourly rows; counted=%d duplicates=%d replayed=%d "
            "outside_window=%d invalid=%d fenced=%d reread=%d",
            len(pub.stats),
            len(pub.hourly),
            counters.counted,
            counters.duplicates,
            counters.replayed,
            counters.outside_window,
            counters.invalid,
            counters.fenced,
            counters.reread,
        )
        try:
            await rows.send(
                settings.stats_topic,
                [(f"{r.model}\x00{r.provider}".encode(), encode_row(r)) for r in pub.stats],
            )
            await rows.send(
                settings.hourly_topic, [(r.model.encode(), encode_row(r)) for r in pub.hourly]
            )
        except PublishFailed as exc:
            # Rows, not state: due again at the next publication.
            view.again(pub)
            health.on_publish_failed()
            log.warning("publication not acknowledged, published again next time: %s", exc)
            return
        counters.published_rows += len(pub.stats)
        health.on_publish(len(pub.stats), len(pub.hourly))

    @app.timer(SEEN_SWEEP_S)
    async def sweep_seen() -> None:
        book.sweep_seen()
        await side.flush_changelog()

    return app


def _record_bytes(value: object) -> int:
    """A record's weight in a batch: its value's size (a tombstone weighs one byte)."""
    return len(value) if isinstance(value, bytes | bytearray) else 1


class FaustAdapter:
    """``FaustSide`` over the Faust app: the only place the bookkeeping meets Faust.

    Every private name of Faust it uses goes through ``faust_private``.
    """

    def __init__(
        self,
        app: faust.App,
        topic: str,
        tables: dict[str, Any],
        gap_reader: GapReader,
        writes: PendingWrites,
        outbox: ChangelogOutbox,
    ) -> None:
        self._app = app
        self._outbox = outbox
        self._topic = topic
        self._tables = tables
        self._gap_reader = gap_reader
        self._writes = writes

    def holding(self) -> tuple[int, frozenset[int]]:
        return fp.generation(self._app), frozenset(
            tp.partition for tp in self._app.consumer.assignment() if tp.topic == self._topic
        )

    def rebalancing(self) -> bool:
        return fp.rebalancing(self._app) or not fp.flow_active(self._app)

    def highwater(self, partition: int) -> int | None:
        return fp.highwater(self._app, TP(self._topic, partition))

    async def committed(self, partition: int) -> int | None:
        return await asyncio.wait_for(
            fp.committed_offset(self._app, TopicPartition(self._topic, partition)),
            timeout=COMMITTED_TIMEOUT_S,
        )

    async def log_start(self, partition: int) -> int:
        return await self._gap_reader.log_start(partition)

    async def log_end(self, partition: int) -> int:
        return await self._gap_reader.log_end(partition)

    async def read(self, partition: int, start: int, end: int) -> list[Record]:
        return [
            Record(partition, r.offset, r.value, r.headers or ())
            for r in await self._gap_reader.read(partition, start, end)
        ]

    async def settled(self) -> None:
        await self._outbox.flush()
        await self._writes.settled()

    async def flush_changelog(self) -> None:
        """Ship the held writes (a timer's, or a partition's run) without waiting for them.

        The loop turn after it lets aiokafka's sender take the new batches to
        the broker while the caller goes on folding.
        """
        await self._outbox.flush()
        await asyncio.sleep(0)

    @contextlib.contextmanager
    def at(self, partition: int) -> Iterator[Tables]:
        with fp.current_event(_Anchor(self._topic, partition)):
            yield self._tables[BUCKETS], self._tables[SEEN]

    def items(self, table: str) -> Iterable[tuple[bytes, bytes]]:
        return fp.table_store(self._tables[table]).items()

    def get(self, table: str, key: bytes) -> bytes | None:
        return fp.table_store(self._tables[table]).get(key)

    def drop(self, table: str, key: bytes, partition: int) -> None:
        t = self._tables[table]
        try:
            del fp.table_store(t)[key]
        except KeyError:
            return
        t.send_changelog(partition, key, None, value_serializer="raw")

    def leave_unacknowledged(self, events: Sequence[Delivered]) -> int:
        return fp.leave_unacknowledged(events)


class _Anchor:
    """Stands in for an event of a partition where the table needs one.

    Faust's table and store read the current event's ``message.topic`` and
    ``message.partition`` (to pick the RocksDB partition and the changelog
    partition); nothing else.
    """

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _AnchorMessage(topic, partition)


class _AnchorMessage:
    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class TrackedTable(faust.Table):
    """A table whose changelog writes the worker sends in batches and waits for.

    A write of bytes (or a tombstone) is held by the ``ChangelogOutbox`` and
    shipped with the others of its partition when the worker flushes (after
    each partition's run, and from timers) or settles; any other value goes
    Faust's way, its future kept in ``PendingWrites``.
    """

    pending_writes: PendingWrites | None = None
    outbox: ChangelogOutbox | None = None

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> Any:
        if (
            self.outbox is not None
            and partition is not None
            and type(key) is bytes
            and (value is None or type(value) is bytes)
        ):
            return self.outbox.put(self, partition, key, value)
        fut = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        if self.pending_writes is not None:
            self.pending_writes.add(fut)
        return fut

    def write_many(self, partition: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        """``self[key] = value`` of each item, all of ``partition``: one RocksDB write for all.

        The changelog writes are held in order, as ``send_changelog`` holds
        them; the store's are one write batch (``faust_private.put_many``).
        Faust's table sensors are not told of these writes (the worker
        reads none of Faust's table metrics).
        """
        if self.outbox is None:
            raise RuntimeError(f"table {self.name}: write_many needs the changelog outbox")
        self.outbox.put_many(self, partition, items)
        fp.put_many(fp.table_store(self), partition, items)


class BucketsTable(TrackedTable):
    """The ``buckets`` table: restoring never goes back to an older record (rule 6).

    A worker that loses a partition in a rebalance may still have changelog
    writes in flight; they can land after the new owner's writes for the
    same key. Replayed in log order, such a late record would replace a
    later state and undercount. So a restored record only replaces the
    stored one if it has folded at least as much (``bookkeeper.restorable``).
    """

    def apply_changelog_batch(self, batch: Any) -> None:
        store = fp.table_store(self)

        def stored(partition: int, key: bytes) -> bytes | None:
            return fp.db_for_partition(store, partition).get(key)

        super().apply_changelog_batch(restorable(batch, stored))
