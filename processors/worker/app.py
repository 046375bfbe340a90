"""The Faust app: topics and tables wired to the pure fold and rolling view.

Guarantee: at-least-once delivery with an exactly-once *effect*. Faust's own
``exactly_once`` guarantee is not trusted (see docs/architecture.md,
"Exactly-once effect", for the rules and the Faust behaviours behind them):

* bucket records carry the source offsets folded into them (one changelog
  message holds both), so a redelivered message is recognised and skipped;
* a ``seen`` table remembers for an hour which message first carried each
  ``event_id``, so a duplicate event (gateway retry, spool replay) is dropped;
* events are acknowledged only once their changelog writes are acknowledged
  by the broker (``PendingWrites``), not on Faust's word that it flushed;
* nothing is folded while partitions move, nor from an older generation
  (``fence.py``), and a partition's state records the next offset it
  expects, so runs Faust failed to deliver are read from Kafka directly
  (``gap_reader.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import weakref
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from cachetools import LRUCache
from faust.streams import _current_event  # the store picks its partition from it
from faust.types import TP

from processors.aggregate import BucketKey, HourBucket
from processors.worker.fence import find_holes, split_by_fence
from processors.worker.fold import DEDUP_WINDOW_S, Record, fold_records
from processors.worker.gap_reader import GapReader
from processors.worker.metrics import WorkerMetrics
from processors.worker.pending_writes import PendingWrites
from processors.worker.records import (
    NEXT_OFFSET_KEY,
    BucketRecord,
    decode_bucket_key,
    decode_offset,
    encode_bucket_key,
    encode_offset,
)
from processors.worker.rolling_view import RollingView
from processors.worker.seen import SeenIds, block_newest, block_partition, decode_block
from processors.worker.tables import BUCKETS, SEEN
from schemas.settings import Settings
from schemas.stats import encode_row

__all__ = ["WorkerCounters", "create_app"]

log = logging.getLogger(__name__)

#: Kafka records per batch. Our producers put up to thousands of events in a
#: record (docs/record-format.md); one-event records from other producers
#: still make batches of a thousand events.
BATCH_MAX = 1_000
BATCH_WITHIN_S = 1.0
SEEN_SWEEP_S = 300.0
#: The hourly series feeds charts: publishing it at most this often keeps a
#: catch-up (every hour of the week dirty at once) from starving the agent.
HOURLY_EVERY_S = 30.0
#: How often a batch that arrived during a rebalance checks whether it is over.
REBALANCE_POLL_S = 0.05
#: Decoded bucket records kept between batches (~3 kB each). Live traffic
#: touches one bucket per key per hour, so this holds every hot bucket of
#: thousands of keys; a week-wide catch-up decodes the rest again as needed.
BUCKET_CACHE_MAX = 8_192
#: Invalid events logged one by one per run; the rest are counted in one line.
INVALID_LOGGED = 5


class WorkerCounters:
    """Plain counters, logged at each publication (and readable by tests)."""

    def __init__(self) -> None:
        self.counted = 0
        self.duplicates = 0
        self.replayed = 0
        self.outside_window = 0
        self.invalid = 0
        self.fenced = 0
        self.reread = 0
        self.published_rows = 0


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
        web_enabled=False,
        stream_wait_empty=False,
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
    stats_topic = app.topic(settings.stats_topic, key_serializer="raw", value_serializer="raw")
    hourly_topic = app.topic(settings.hourly_topic, key_serializer="raw", value_serializer="raw")
    # A broker outage of minutes holds state writes: wait for it (under
    # Faust's 1,200 s producer request timeout) rather than crash the worker.
    writes = PendingWrites(timeout_s=900.0)

    def table(cls: type[TrackedTable], name: str) -> Any:
        added: Any = app.tables.add(
            cls(
                app,
                name=name,
                key_type=bytes,
                value_type=bytes,
                partitions=settings.partitions,
                beacon=app.tables.beacon,
            )
        )
        added.pending_writes = writes
        return added

    buckets = table(BucketsTable, BUCKETS)
    seen = table(TrackedTable, SEEN)

    @app.on_partitions_revoked.connect
    async def settle_before_revoke(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Awaited by Faust before the consumer rejoins the group, so every
        # write of ours is in the changelog before anyone restores it.
        await writes.settled()

    def load(key: BucketKey) -> HourBucket | None:
        raw = buckets.data.get(encode_bucket_key(key))
        return BucketRecord.from_bytes(raw).bucket if raw is not None else None

    view = RollingView(load)
    assigned: dict[str, Any] = {"tps": None, "hourly_at": 0.0}
    expired: list[BucketKey] = []

    def reindex() -> None:
        keys = []
        for raw_key, _ in buckets.data.items():
            if raw_key != NEXT_OFFSET_KEY:
                keys.append(decode_bucket_key(raw_key))
        view.reset(keys)

    gap_reader = GapReader(bootstrap, settings.topic)
    folded_since_tick: set[int] = set()

    @app.agent(events)
    async def fold(stream: Any) -> Any:
        try:
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
                health.on_batch(len(batch))
                try:
                    await fold_batch(batch)
                except BaseException:
                    # take_events acknowledges the buffer even when we leave
                    # with an error or are cancelled: nothing of a batch that
                    # did not finish may count as done.
                    fence_off(batch)
                    raise
                yield len(batch)
        finally:
            await gap_reader.close()

    def fence_off(events: list[Any]) -> None:
        # Neither folded nor acknowledged: the flag keeps Faust from counting
        # the message as done; the partition's owner reads it again.
        for ev in events:
            if not ev.message.acked:
                ev.message.acked = True
                counters.fenced += 1

    def holding() -> tuple[int, set[int]]:
        """This worker's generation and the event partitions it holds."""
        return app.consumer_generation_id, {
            tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topic
        }

    def moved(held: tuple[int, set[int]]) -> bool:
        """Whether partitions moved (or are moving) since ``held`` was taken."""
        return bool(app.rebalancing) or holding() != held

    def stored_next_offset(partition: int) -> int | None:
        with current_partition(_Anchor(settings.topic, partition)):
            raw = buckets.data.get(NEXT_OFFSET_KEY)
        return decode_offset(raw) if raw is not None else None

    fold_lock = asyncio.Lock()  # the agent and the idle-partition check take turns

    async def fold_batch(batch: list[Any]) -> None:
        # No folding while partitions move (processors/worker/fence.py): wait
        # until the rebalance and the tables' recovery are over, then fold
        # only what this generation fetched for partitions we hold.
        while app.rebalancing or not app.flow_control.is_active():
            await asyncio.sleep(REBALANCE_POLL_S)
        async with fold_lock:
            held = holding()
            live, fenced = split_by_fence(batch, generation=held[0], partitions=held[1])
            fence_off(fenced)
            by_partition: dict[int, list[Any]] = defaultdict(list)
            for ev in live:
                by_partition[ev.message.partition].append(ev)
            for partition, evs in by_partition.items():
                evs.sort(key=lambda ev: ev.message.offset)
                if not await fold_partition_events(partition, evs, held):
                    fence_off(live)  # partitions moved: fold no more of this batch
                    break
            # take_events acknowledges the batch once we return: not before
            # its state is in the changelog.
            await writes.settled()

    async def fold_partition_events(
        partition: int, evs: list[Any], held: tuple[int, set[int]]
    ) -> bool:
        """Fold one partition's delivered events and the runs Faust did not deliver.

        Everything is folded in offset order: delivered events up to a hole,
        the hole read from Kafka, the next delivered events, and so on.
        Returns False, having folded only a prefix, if partitions moved.
        """
        if moved(held):
            return False
        stored = stored_next_offset(partition)
        if stored is None:
            # A partition without state starts at the log's first offset, not
            # at whatever Faust happens to deliver first.
            stored = await gap_reader.log_start(partition)
        holes, after = find_holes([ev.message.offset for ev in evs], stored)
        expected, i = stored, 0
        for start, end in holes:
            j = i
            while j < len(evs) and evs[j].message.offset < start:
                j += 1
            if moved(held):
                return False
            fold_run(partition, delivered(evs[i:j]), expected, start)
            i = j
            log.warning(
                "partition %d: offsets %d..%d were not delivered by the consumer; "
                "reading them from Kafka",
                partition,
                start,
                end - 1,
            )
            expected = await catch_up(partition, start, end, held)
            if expected < end:
                return False
        if moved(held):
            return False
        fold_run(partition, delivered(evs[i:]), expected, after or expected)
        await asyncio.sleep(0)  # heartbeats and a revoke get a turn between partitions
        return True

    def delivered(evs: list[Any]) -> list[Record]:
        return [
            Record(ev.message.partition, ev.message.offset, ev.value, ev.message.headers or ())
            for ev in evs
        ]

    async def catch_up(partition: int, start: int, end: int, held: tuple[int, set[int]]) -> int:
        """Fold ``[start, end)`` of a partition read from Kafka, in bounded steps.

        Returns the offset reached: ``end``, or less if partitions moved.
        Each step's state is in the changelog before the next is read, so a
        long run never sits in memory at once.
        """
        pos = start
        while pos < end:
            take = min(end - pos, settings.worker_reread_max)
            records = await gap_reader.read(partition, pos, pos + take)
            if moved(held):
                return pos
            fold_run(
                partition,
                [Record(partition, r.offset, r.value, r.headers or ()) for r in records],
                pos,
                pos + take,
            )
            counters.reread += take
            await writes.settled()
            pos += take
        return pos

    #: What the worker keeps in memory for the partitions it holds: the seen
    #: index and the decoded bucket records, both rebuilt from the tables
    #: once Faust has restored them after an assignment. ``built`` is the
    #: (generation, recoveries) they were built for: the generation changes
    #: when the group rejoins, before the tables are restored, so a rebuild
    #: keyed on it alone could read a table still being restored (a seen
    #: index missing the new partitions' ids counts their copies again).
    held_state: dict[str, Any] = {"built": None, "recoveries": 0, "ids": SeenIds(), "cache": {}}

    @seen.on_recover
    async def seen_restored() -> None:
        # Faust calls this once the tables are restored, before it resumes
        # the streams: the next fold rebuilds the index from the whole table.
        held_state["recoveries"] += 1

    def new_cache() -> LRUCache[BucketKey, BucketRecord]:
        return LRUCache(maxsize=BUCKET_CACHE_MAX)

    def state_key() -> tuple[int, int]:
        return app.consumer_generation_id, held_state["recoveries"]

    def current_state() -> tuple[SeenIds, LRUCache[BucketKey, BucketRecord]]:
        """The seen index and bucket cache of the partitions held now.

        Only called where partitions are not moving and the tables are
        restored (folding, sweeping): it rebuilds from the tables as they are.
        """
        if held_state["built"] != state_key():
            held_state["ids"] = SeenIds(seen.data.items())
            held_state["cache"] = new_cache()
            held_state["built"] = state_key()
            log.info("seen index: %d event ids of the partitions held", len(held_state["ids"]))
        return held_state["ids"], held_state["cache"]

    def fold_run(partition: int, run: list[Record], expected: int, next_offset: int) -> None:
        """Fold one partition's run of records, in offset order, and move its state on."""
        ids, cache = current_state()
        with current_partition(_Anchor(settings.topic, partition)):
            try:
                result = fold_records(
                    run, buckets, seen, ids, now=datetime.now(UTC), now_s=time.time(), cache=cache
                )
            except BaseException:
                held_state["built"] = None  # the memory may be ahead of the tables
                raise
            if next_offset > expected:
                buckets[NEXT_OFFSET_KEY] = encode_offset(next_offset)
        folded_since_tick.add(partition)
        counters.counted += result.counted
        counters.duplicates += result.duplicates
        counters.replayed += result.replayed
        counters.outside_window += result.outside_window
        counters.invalid += len(result.invalid)
        health.on_fold(partition, result)
        for offset, line, why in result.invalid[:INVALID_LOGGED]:
            log.warning(
                "skipping invalid event at %s/%s line %d: %s", partition, offset, line + 1, why
            )
        if len(result.invalid) > INVALID_LOGGED:
            log.warning(
                "partition %d: %d more invalid events in this run",
                partition,
                len(result.invalid) - INVALID_LOGGED,
            )
        for key, rec in result.changed.items():
            view.note(key, rec.bucket if rec is not None else None)

    idle_ticks: dict[int, int] = defaultdict(int)

    async def nudge_idle_partitions() -> None:
        """Read a held partition's backlog that Faust is not delivering.

        Holes are found when Faust delivers a later event of the partition.
        If Faust committed past unfolded events and the partition then went
        quiet, nothing would be delivered. So a partition that folded
        nothing for two ticks in a row while its state expects an offset
        below the broker's high watermark is read from Kafka directly.
        """
        async with fold_lock:
            held = holding()
            for partition in held[1]:
                idle_ticks[partition] = (
                    0 if partition in folded_since_tick else idle_ticks[partition] + 1
                )
            folded_since_tick.clear()
            for partition in sorted(held[1]):
                if idle_ticks[partition] < 2:
                    continue
                highwater = app.consumer.highwater(TP(settings.topic, partition))
                stored = stored_next_offset(partition)
                if highwater is None or stored is None or stored >= highwater:
                    continue
                log.warning(
                    "partition %d: state expects offset %d, the log ends at %d and nothing "
                    "arrived; reading the rest from Kafka",
                    partition,
                    stored,
                    highwater,
                )
                await catch_up(partition, stored, highwater, held)

    @app.timer(settings.stats_interval_s)
    async def publish() -> None:
        tps = frozenset(app.consumer.assignment()) if app.consumer else frozenset()
        if tps != assigned["tps"]:
            assigned["tps"] = tps
            reindex()
        hourly_due = time.monotonic() - assigned["hourly_at"] >= max(
            HOURLY_EVERY_S, settings.stats_interval_s
        )
        pub = view.publish(datetime.now(UTC), hourly=hourly_due)
        if hourly_due:
            assigned["hourly_at"] = time.monotonic()
        # Buffered sends: stats rows are republished every interval anyway.
        for row in pub.stats:
            stats_topic.send_soon(
                key=f"{row.model}\x00{row.provider}".encode(), value=encode_row(row)
            )
        for hrow in pub.hourly:
            hourly_topic.send_soon(key=hrow.model.encode(), value=encode_row(hrow))
        if not app.rebalancing and app.flow_control.is_active():
            await nudge_idle_partitions()
        expired.extend(pub.expired)
        # No deletes while partitions are moving: a later tick does them.
        # A cache built for an older assignment is dropped at the next fold anyway.
        cache = held_state["cache"] if held_state["built"] == state_key() else {}
        for key in expired if not app.rebalancing else ():
            cache.pop(key, None)
            raw_key = encode_bucket_key(key)
            raw = buckets.data.get(raw_key)
            if raw is not None:
                for partition in BucketRecord.from_bytes(raw).applied:
                    _drop(buckets, raw_key, partition)
        if not app.rebalancing:
            expired.clear()
        counters.published_rows += len(pub.stats)
        health.on_publish(len(pub.stats), len(pub.hourly))
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

    @app.timer(SEEN_SWEEP_S)
    async def sweep_seen() -> None:
        if app.rebalancing or not app.flow_control.is_active():
            # The next sweep does it: no writes to partitions that may be
            # leaving, no index built from tables still being restored.
            return
        cutoff = time.time() - DEDUP_WINDOW_S
        ids, _ = current_state()
        old = []
        for k, v in seen.data.items():
            partition = block_partition(k)
            if partition is None:
                # A per-event record of the format before blocks: (partition, offset, time).
                if len(v) == _OLD_SEEN.size:
                    old.append((k, int(_OLD_SEEN.unpack(v)[0])))
            elif block_newest(v) < cutoff:
                ids.forget(decode_block(v))
                old.append((k, partition))
        for k, partition in old:
            _drop(seen, k, partition)

    return app


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


@contextlib.contextmanager
def current_partition(event: Any) -> Iterator[None]:
    """Make the table store use ``event``'s partition (it reads Faust's current event)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TrackedTable(faust.Table):
    """A table whose changelog writes the worker can wait for (PendingWrites)."""

    pending_writes: PendingWrites | None = None

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        if self.pending_writes is not None:
            self.pending_writes.add(fut)
        return fut


class BucketsTable(TrackedTable):
    """The ``buckets`` table: restoring never goes back to an older record.

    A worker that loses a partition in a rebalance may still have changelog
    writes in flight; they can land after the new owner's writes for the
    same key. Replayed in log order, such a late record would replace a
    later state and undercount. So a restored record only replaces the
    stored one if it has folded at least as much (``BucketRecord.supersedes``).
    """

    def apply_changelog_batch(self, batch: Any) -> None:
        latest: dict[tuple[int, bytes], bytes | None] = {}
        keep = []
        for ev in batch:
            msg = ev.message
            bk = (msg.partition, msg.key)
            if msg.value is not None and msg.key is not None and msg.key != NEXT_OFFSET_KEY:
                if bk in latest:
                    old = latest[bk]
                else:
                    store: Any = self.data
                    old = store._db_for_partition(msg.partition).get(msg.key)
                if old is not None and not BucketRecord.supersedes(msg.value, old):
                    log.warning(
                        "changelog %s/%s: an older record for a bucket, not restored",
                        msg.partition,
                        msg.offset,
                    )
                    continue
            latest[bk] = msg.value
            keep.append(ev)
        super().apply_changelog_batch(keep)


_OLD_SEEN = struct.Struct("<iqd")


def _drop(table: Any, key: bytes, partition: int) -> None:
    """Delete a key from the local store and tombstone it in its changelog partition."""
    try:
        del table.data[key]
    except KeyError:
        return
    table.send_changelog(partition, key, None, value_serializer="raw")
