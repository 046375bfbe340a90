"""The Faust app: topics and tables wired to the pure fold and rolling view.

Guarantee: at-least-once delivery with an exactly-once *effect*. Faust's own
``exactly_once`` guarantee is not trusted (see docs/architecture.md). Instead:

* bucket records carry the source offsets folded into them (one changelog
  message holds both), so a redelivered message is recognised and skipped;
* a ``seen`` table remembers for an hour which message first carried each
  ``event_id``, so a duplicate event (gateway retry, spool replay) is dropped;
  its changelog carries one block per partition per batch, not one message
  per event (``processors.worker.state``);
* Faust flushes the changelog producer before committing source offsets, so
  offsets never move past state that is not in the changelog.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust

from processors.worker.fold import Message, fold_partition
from processors.worker.rolling_view import RollingView
from processors.worker.state import CachedBuckets, FaustSeen, SeenTable
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
        self.not_owned = 0
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
    buckets = app.Table("buckets", key_type=bytes, value_type=bytes, partitions=settings.partitions)
    seen_table = app.tables.add(
        SeenTable(
            app,
            name="seen",
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            beacon=app.tables.beacon,
        )
    )
    records = CachedBuckets(buckets)
    seen = FaustSeen(seen_table)
    view = RollingView(records.bucket)
    assigned: dict[str, Any] = {"tps": None, "hourly_at": 0.0}

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        gone = sorted(tp.partition for tp in revoked if tp.topic == settings.topic)
        for partition in gone:
            records.forget(partition)
        if gone:
            assigned["tps"] = None  # the next publication re-reads what is ours
            log.info("partitions %s revoked: their cached buckets are forgotten", gone)

    @app.agent(events)
    async def fold(stream: Any) -> Any:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            now = datetime.now(UTC)
            now_s = time.time()
            per_partition: dict[int, list[Message]] = defaultdict(list)
            owned = app.consumer.assignment()
            for ev in batch:
                msg = ev.message
                if msg.tp not in owned:
                    # Buffered before a rebalance took its partition away: the new
                    # owner reads it again from the last commit, so it is not lost.
                    counters.not_owned += 1
                    continue
                try:
                    event = decode_event(ev.value)
                except InvalidEvent as exc:
                    counters.invalid += 1
                    log.warning(
                        "skipping invalid event at %s/%s: %s", msg.partition, msg.offset, exc
                    )
                    continue
                per_partition[msg.partition].append(Message(msg.partition, msg.offset, event))
            for messages in per_partition.values():
                try:
                    result = fold_partition(messages, records, seen, now=now, now_s=now_s)
                except BaseException:
                    records.forget()  # the cache may hold a half-folded record
                    raise
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
            view.reset(list(records.keys()))
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
            records.drop(key)
        counters.published_rows += len(pub.stats)
        log.info(
            "published %d stats rows, %d hourly rows; counted=%d duplicates=%d replayed=%d "
            "outside_window=%d invalid=%d not_owned=%d",
            len(pub.stats),
            len(pub.hourly),
            counters.counted,
            counters.duplicates,
            counters.replayed,
            counters.outside_window,
            counters.invalid,
            counters.not_owned,
        )

    @app.timer(SEEN_SWEEP_S)
    async def sweep_seen() -> None:
        dropped = seen.sweep()
        if dropped:
            log.info("forgot %d seen blocks older than the dedup hour", dropped)

    return app
