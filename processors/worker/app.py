"""The Faust app: topics and tables wired to the pure fold and rolling view.

Guarantee: at-least-once delivery with an exactly-once *effect*. Faust's own
``exactly_once`` guarantee is not trusted (see docs/architecture.md). Instead:

* bucket records carry the source offsets folded into them (one changelog
  message holds both), so a redelivered message is recognised and skipped;
* a ``seen`` table remembers for an hour which message first carried each
  ``event_id``, so a duplicate event (gateway retry, spool replay) is dropped;
* Faust flushes the changelog producer before committing source offsets, so
  offsets never move past state that is not in the changelog.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event  # the store picks its partition from it

from processors.aggregate import BucketKey, HourBucket
from processors.worker.fold import DEDUP_WINDOW_S, Message, fold_partition
from processors.worker.records import (
    BucketRecord,
    SeenRecord,
    decode_bucket_key,
    encode_bucket_key,
)
from processors.worker.rolling_view import RollingView
from schemas.codec import decode_event
from schemas.errors import InvalidEvent
from schemas.settings import Settings
from schemas.stats import encode_row

__all__ = ["WorkerCounters", "create_app"]

log = logging.getLogger(__name__)

#: Larger batches mean fewer bucket writes per event (one per touched key per
#: batch); measured 2x over 5,000/0.25 s in bench/worker_throughput.py.
BATCH_MAX = 20_000
BATCH_WITHIN_S = 1.0
SEEN_SWEEP_S = 300.0
#: The hourly series feeds charts: publishing it at most this often keeps a
#: catch-up (every hour of the week dirty at once) from starving the agent.
HOURLY_EVERY_S = 30.0


class WorkerCounters:
    """Plain counters, logged at each publication (and readable by tests)."""

    def __init__(self) -> None:
        self.counted = 0
        self.duplicates = 0
        self.replayed = 0
        self.outside_window = 0
        self.invalid = 0
        self.published_rows = 0


def create_app(
    settings: Settings,
    *,
    bootstrap: str,
    app_id: str | None = None,
    data_dir: Path | None = None,
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
    )
    counters = WorkerCounters()

    events = app.topic(
        settings.topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    stats_topic = app.topic(settings.stats_topic, key_serializer="raw", value_serializer="raw")
    hourly_topic = app.topic(settings.hourly_topic, key_serializer="raw", value_serializer="raw")
    buckets: Any = app.tables.add(
        BucketsTable(
            app,
            name="buckets",
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            beacon=app.tables.beacon,
        )
    )
    seen = app.Table("seen", key_type=bytes, value_type=bytes, partitions=settings.partitions)

    def load(key: BucketKey) -> HourBucket | None:
        raw = buckets.data.get(encode_bucket_key(key))
        return BucketRecord.from_bytes(raw).bucket if raw is not None else None

    view = RollingView(load)
    assigned: dict[str, Any] = {"tps": None, "hourly_at": 0.0}

    def reindex() -> None:
        keys = []
        for raw_key, _ in buckets.data.items():
            keys.append(decode_bucket_key(raw_key))
        view.reset(keys)

    @app.agent(events)
    async def fold(stream: Any) -> Any:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            now = datetime.now(UTC)
            now_s = time.time()
            per_partition: dict[int, list[tuple[Any, Message]]] = defaultdict(list)
            for ev in batch:
                msg = ev.message
                try:
                    event = decode_event(ev.value)
                except InvalidEvent as exc:
                    counters.invalid += 1
                    log.warning(
                        "skipping invalid event at %s/%s: %s", msg.partition, msg.offset, exc
                    )
                    continue
                per_partition[msg.partition].append((ev, Message(msg.partition, msg.offset, event)))
            for partition_events in per_partition.values():
                token = _current_event.set(weakref.ref(partition_events[0][0]))
                try:
                    result = fold_partition(
                        [m for _, m in partition_events],
                        buckets,
                        seen,
                        now=now,
                        now_s=now_s,
                    )
                finally:
                    _current_event.reset(token)
                counters.counted += result.counted
                counters.duplicates += result.duplicates
                counters.replayed += result.replayed
                counters.outside_window += result.outside_window
                for key, rec in result.changed.items():
                    view.note(key, rec.bucket)
            yield len(batch)

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
        # Buffered sends: Faust flushes its producer before it commits offsets.
        for row in pub.stats:
            stats_topic.send_soon(
                key=f"{row.model}\x00{row.provider}".encode(), value=encode_row(row)
            )
        for hrow in pub.hourly:
            hourly_topic.send_soon(key=hrow.model.encode(), value=encode_row(hrow))
        for key in pub.expired:
            raw_key = encode_bucket_key(key)
            raw = buckets.data.get(raw_key)
            if raw is not None:
                for partition in BucketRecord.from_bytes(raw).applied:
                    _drop(buckets, raw_key, partition)
        counters.published_rows += len(pub.stats)
        log.info(
            "published %d stats rows, %d hourly rows; counted=%d duplicates=%d replayed=%d "
            "outside_window=%d invalid=%d",
            len(pub.stats),
            len(pub.hourly),
            counters.counted,
            counters.duplicates,
            counters.replayed,
            counters.outside_window,
            counters.invalid,
        )

    @app.timer(SEEN_SWEEP_S)
    async def sweep_seen() -> None:
        cutoff = time.time() - DEDUP_WINDOW_S
        old = []
        for k, v in seen.data.items():
            rec = SeenRecord.from_bytes(v)
            if rec.first_seen < cutoff:
                old.append((k, rec.partition))
        for k, partition in old:
            _drop(seen, k, partition)

    return app


class BucketsTable(faust.Table):
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
            if msg.value is not None and msg.key is not None:
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


def _drop(table: Any, key: bytes, partition: int) -> None:
    """Delete a key from the local store and tombstone it in its changelog partition."""
    try:
        del table.data[key]
    except KeyError:
        return
    table.send_changelog(partition, key, None, value_serializer="raw")
