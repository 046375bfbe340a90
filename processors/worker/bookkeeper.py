"""The worker's partition bookkeeping: the exactly-once effect, free of Faust.

``PartitionBook`` holds what docs/architecture.md ("Exactly-once effect on
at-least-once delivery", rules 1-7) asks of the worker around the pure fold
(``fold_records``): which events of a batch may be folded (the fence), in
which order, from which offset on (holes read from Kafka, in bounded
steps), when they may be acknowledged, what to do with partitions Faust
goes quiet on, which bucket records expire and which ``seen`` blocks are
swept. It talks to Faust only through ``FaustSide``, a small interface:
``processors/worker/app.py`` implements it over the Faust app, and
``tests/unit/worker/test_bookkeeper.py`` over dicts and a list of records
per partition.

After each assignment (a new consumer-group generation) a partition's
first run starts at the group's committed offset when that is below the
state's expected offset: every offset from there on is then either
redelivered by Faust or read here, and so folded again as a replay, which
rewrites the records it touches (rule 7), even when Faust drops some of
the redeliveries.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from cachetools import LRUCache

from processors.aggregate import BucketKey, HourBucket
from processors.worker.fence import find_holes, split_by_fence
from processors.worker.fold import DEDUP_WINDOW_S, FoldStats, Record, fold_records
from processors.worker.records import (
    NEXT_OFFSET_KEY,
    BucketRecord,
    decode_offset,
    encode_bucket_key,
    encode_offset,
)
from processors.worker.seen import SeenIds, block_newest, block_partition
from processors.worker.tables import BUCKETS, SEEN

__all__ = [
    "REBALANCE_POLL_S",
    "Delivered",
    "FaustSide",
    "PartitionBook",
    "WorkerCounters",
    "restorable",
]

log = logging.getLogger(__name__)

#: How often a batch that arrived during a rebalance checks whether it is over.
REBALANCE_POLL_S = 0.05
#: Invalid events logged one by one per run; the rest are counted in one line.
INVALID_LOGGED = 5
#: Decoded bucket records kept between batches (~3 kB each). Live traffic
#: touches one bucket per key per hour, so this holds every hot bucket of
#: thousands of keys; a week-wide catch-up decodes the rest again as needed.
BUCKET_CACHE_MAX = 8_192
#: A partition that folded nothing for this many ticks in a row while its
#: state is behind the high watermark is read from Kafka.
IDLE_TICKS = 2

Tables = tuple[MutableMapping[bytes, bytes], MutableMapping[bytes, bytes]]


class DeliveredMessage(Protocol):
    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def generation_id(self) -> int | None: ...

    @property
    def headers(self) -> Any: ...


class Delivered(Protocol):
    """An event as Faust delivers it: one Kafka record of the events topic."""

    @property
    def message(self) -> DeliveredMessage: ...

    @property
    def value(self) -> Any: ...


D = TypeVar("D", bound=Delivered)
C = TypeVar("C")


class FaustSide(Protocol):
    """What the bookkeeping needs of Faust (and of Kafka beside it)."""

    def holding(self) -> tuple[int, frozenset[int]]:
        """The consumer-group generation and the event partitions held in it."""

    def rebalancing(self) -> bool:
        """Partitions are moving, or the tables are still recovering after a move."""

    def highwater(self, partition: int) -> int | None:
        """The broker's high watermark of an events partition, if known."""

    async def committed(self, partition: int) -> int | None:
        """The consumer group's committed offset of an events partition (None: none)."""

    async def log_start(self, partition: int) -> int:
        """The first offset of an events partition the broker still has."""

    async def log_end(self, partition: int) -> int:
        """The broker's end offset of an events partition, asked of the broker."""

    async def read(self, partition: int, start: int, end: int) -> Sequence[Record]:
        """The records ``start <= offset < end`` of an events partition, read from Kafka."""

    async def settled(self) -> None:
        """Return once every changelog write made so far is acknowledged by the broker."""

    async def flush_changelog(self) -> None:
        """Send the changelog writes made so far, without waiting for their acknowledgement."""

    def at(self, partition: int) -> AbstractContextManager[Tables]:
        """The ``buckets`` and ``seen`` tables, reading and writing ``partition``'s part."""

    def items(self, table: str) -> Iterable[tuple[bytes, bytes]]:
        """Every record of a table in the partitions held."""

    def get(self, table: str, key: bytes) -> bytes | None:
        """A table's record, whichever held partition has it."""

    def drop(self, table: str, key: bytes, partition: int) -> None:
        """Delete a record locally and tombstone it in the partition's changelog."""

    def leave_unacknowledged(self, events: Sequence[Delivered]) -> int:
        """Keep Faust from acknowledging these events; how many were not marked yet."""


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
        #: bucket records written back (the batch bound follows them)
        self.bucket_writes = 0


def restorable(batch: Iterable[C], stored: Callable[[int, bytes], bytes | None]) -> list[C]:
    """The changelog events of ``buckets`` a restore may apply (rule 6).

    A bucket record replaces the stored one (``stored(partition, key)``, or an
    earlier one of the same batch) only if it has folded at least as much:
    a late write from a worker that lost the partition never wins.
    """
    latest: dict[tuple[int, bytes], bytes | None] = {}
    keep = []
    for ev in batch:
        msg: Any = ev.message  # type: ignore[attr-defined]
        bk = (msg.partition, msg.key)
        if msg.value is not None and msg.key is not None and msg.key != NEXT_OFFSET_KEY:
            old = latest[bk] if bk in latest else stored(msg.partition, msg.key)
            if old is not None and not BucketRecord.supersedes(msg.value, old):
                log.warning(
                    "changelog %s/%s: an older record for a bucket, not restored",
                    msg.partition,
                    msg.offset,
                )
                continue
        latest[bk] = msg.value
        keep.append(ev)
    return keep


_OLD_SEEN = struct.Struct("<iqd")  # a per-event seen record of the format before blocks


class PartitionBook:
    """Exactly-once bookkeeping of the event partitions a worker holds."""

    def __init__(
        self,
        side: FaustSide,
        *,
        reread_max: int,
        note: Callable[[BucketKey, HourBucket | None], None] | None = None,
        counters: WorkerCounters | None = None,
        on_fold: Callable[[int, FoldStats], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.side = side
        self.reread_max = reread_max
        self.counters = counters or WorkerCounters()
        self._note = note
        self._on_fold = on_fold  # each run's outcome, per partition (the worker's metrics)
        self._clock = clock
        self._lock = asyncio.Lock()  # the agent and the timers take turns
        # Memory of one assignment: the seen index, the decoded bucket
        # records, and per partition the offset its next run follows on from.
        # ``_built`` is the (generation, restorations) they were built for.
        self._restorations = 0
        self._built: tuple[int, int] | None = None
        self._ids = SeenIds()
        self._cache: LRUCache[BucketKey, BucketRecord] = LRUCache(maxsize=BUCKET_CACHE_MAX)
        self._expected: dict[int, int] = {}
        self._folded_since_tick: set[int] = set()
        self._idle: dict[int, int] = defaultdict(int)
        self._expired: list[BucketKey] = []

    # -- memory per generation -------------------------------------------------

    def tables_restored(self) -> None:
        """Faust has restored the tables after an assignment (its recovery callback).

        The generation changes when the group rejoins, before the tables are
        restored: memory keyed on the generation alone could be built from a
        table still being restored (a seen index missing the ids of the
        partitions coming back counts their copies again). So the memory is
        keyed on the restorations too and rebuilt after each one.
        """
        self._restorations += 1

    @property
    def restorations(self) -> int:
        """How many times Faust has restored the tables (see ``tables_restored``)."""
        return self._restorations

    def _key(self) -> tuple[int, int]:
        return self.side.holding()[0], self._restorations

    def _current(self) -> tuple[SeenIds, LRUCache[BucketKey, BucketRecord]]:
        """The seen index and bucket cache of the partitions held now.

        Only called where partitions are not moving and the tables are
        restored (folding, sweeping, nudging): rebuilt from the tables as
        they are whenever the assignment or a restoration is new; the
        expected offsets are found again then (``_start``).
        """
        key = self._key()
        if self._built != key:
            self._ids = SeenIds(self.side.items(SEEN))
            self._cache = LRUCache(maxsize=BUCKET_CACHE_MAX)
            self._expected = {}
            self._built = key
            log.info("seen index: %d event ids of the partitions held", len(self._ids))
        return self._ids, self._cache

    def cached(self, key: BucketKey) -> BucketRecord | None:
        """The decoded record the fold holds for ``key``, if any: what the table holds.

        For the rolling view, which would otherwise decode the stored bytes of
        every bucket it sums. None when the memory was not built for the
        partitions held now (read the table then).
        """
        if self._built != self._key():
            return None
        return self._cache.get(key)

    def _forget(self) -> None:
        """The memory may be ahead of the tables: rebuild it before the next fold."""
        self._built = None

    def seen_index_size(self) -> int:
        """Event ids in the in-memory seen index."""
        return len(self._ids)

    def stored_next_offset(self, partition: int) -> int | None:
        """The next offset the partition's state expects (rule 5), as stored."""
        with self.side.at(partition) as (buckets, _):
            raw = buckets.get(NEXT_OFFSET_KEY)
        return decode_offset(raw) if raw is not None else None

    async def _start(self, partition: int) -> int:
        """Where the partition's runs follow on from in this generation.

        The state's expected offset, or the group's committed offset if that
        is below it: after a SIGKILL the local state can be ahead of the
        changelog, and the offsets between are then folded again as replays
        and rewritten (rule 7), whether Faust redelivers them or not.
        """
        self._current()
        if partition in self._expected:
            return self._expected[partition]
        stored = self.stored_next_offset(partition)
        if stored is None:
            # A partition without state starts at the log's first offset, not
            # at whatever Faust happens to deliver first.
            start = await self.side.log_start(partition)
        else:
            committed = await self.side.committed(partition)
            if committed is None:
                committed = await self.side.log_start(partition)
            start = min(stored, committed)
            if start < stored:
                log.info(
                    "partition %d: the group committed offset %d, the state expects %d; "
                    "offsets from %d on are folded again as replays and rewritten",
                    partition,
                    committed,
                    stored,
                    start,
                )
        if self._key() != self._built:
            # The assignment changed while we waited for the broker: this start
            # belongs to no generation; the caller sees the move and stops.
            return start
        self._expected.setdefault(partition, start)
        return self._expected[partition]

    # -- folding ---------------------------------------------------------------

    def _moved(self, held: tuple[int, frozenset[int]]) -> bool:
        """Whether partitions moved (or are moving) since ``held`` was taken."""
        return self.side.rebalancing() or self.side.holding() != held

    def _fence(self, events: Sequence[Delivered]) -> None:
        self.counters.fenced += self.side.leave_unacknowledged(events)

    async def fold_batch(self, batch: Sequence[D]) -> None:
        """Fold a batch Faust delivered; Faust acknowledges it once this returns.

        Nothing is folded while partitions move; then only events of this
        generation, of partitions still held (rule 4). Whatever is not
        folded, and the whole batch if this fails or is cancelled half-way,
        is left unacknowledged. Returns only once the state is in the
        changelog (rule 3).
        """
        try:
            while self.side.rebalancing():
                await asyncio.sleep(REBALANCE_POLL_S)
            async with self._lock:
                held = self.side.holding()
                live, fenced = split_by_fence(batch, generation=held[0], partitions=held[1])
                self._fence(fenced)
                by_partition: dict[int, list[D]] = defaultdict(list)
                for ev in live:
                    by_partition[ev.message.partition].append(ev)
                for partition, evs in by_partition.items():
                    evs.sort(key=lambda ev: ev.message.offset)
                    if not await self._fold_partition(partition, evs, held):
                        self._fence(live)  # partitions moved: fold no more of this batch
                        break
                    # On their way while the next partition folds: at the end
                    # of the batch, only the last partition's writes are left
                    # to wait for.
                    await self.side.flush_changelog()
                await self.side.settled()
        except BaseException:
            self._fence(batch)
            raise

    async def _fold_partition(
        self, partition: int, evs: list[D], held: tuple[int, frozenset[int]]
    ) -> bool:
        """Fold one partition's delivered events and the runs Faust did not deliver.

        Everything is folded in offset order: delivered events up to a hole,
        the hole read from Kafka, the next delivered events, and so on.
        Returns False, having folded only a prefix, if partitions moved.
        """
        if self._moved(held):
            return False
        expected = await self._start(partition)
        if self._moved(held):
            return False
        holes, after = find_holes([ev.message.offset for ev in evs], expected)
        i = 0
        for start, end in holes:
            j = i
            while j < len(evs) and evs[j].message.offset < start:
                j += 1
            if self._moved(held):
                return False
            self._fold_run(partition, _records(evs[i:j]), expected, start)
            i = j
            log.warning(
                "partition %d: offsets %d..%d were not delivered by the consumer; "
                "reading them from Kafka",
                partition,
                start,
                end - 1,
            )
            expected = await self._catch_up(partition, start, end, held)
            if expected < end:
                return False
        if self._moved(held):
            return False
        self._fold_run(partition, _records(evs[i:]), expected, after or expected)
        await asyncio.sleep(0)  # heartbeats and a revoke get a turn between partitions
        return True

    async def _catch_up(
        self, partition: int, start: int, end: int, held: tuple[int, frozenset[int]]
    ) -> int:
        """Fold ``[start, end)`` of a partition read from Kafka, in bounded steps.

        Returns the offset reached: ``end``, or less if partitions moved.
        Each step's state is in the changelog before the next is read, so a
        long run never sits in memory at once.
        """
        pos = start
        while pos < end:
            take = min(end - pos, self.reread_max)
            records = await self.side.read(partition, pos, pos + take)
            if self._moved(held):
                return pos
            self._fold_run(partition, list(records), pos, pos + take)
            self.counters.reread += take
            await self.side.settled()
            pos += take
        return pos

    def _fold_run(self, partition: int, run: list[Record], expected: int, next_offset: int) -> None:
        """Fold one partition's run of records, in offset order, and move its state on."""
        ids, cache = self._current()
        with self.side.at(partition) as (buckets, seen):
            try:
                now_s = self._clock()
                result = fold_records(
                    run,
                    buckets,
                    seen,
                    ids,
                    now=datetime.fromtimestamp(now_s, UTC),
                    now_s=now_s,
                    cache=cache,
                    replay_below=expected,
                )
                if next_offset > expected:
                    raw = buckets.get(NEXT_OFFSET_KEY)
                    stored = decode_offset(raw) if raw is not None else next_offset
                    # Written again in a replay too (rule 7), never moved back.
                    buckets[NEXT_OFFSET_KEY] = encode_offset(max(stored, next_offset))
            except BaseException:
                self._forget()
                raise
        if next_offset > expected:
            self._expected[partition] = max(self._expected.get(partition, 0), next_offset)
        self._folded_since_tick.add(partition)
        c = self.counters
        c.counted += result.counted
        c.duplicates += result.duplicates
        c.replayed += result.replayed
        c.outside_window += result.outside_window
        c.invalid += len(result.invalid)
        c.bucket_writes += len(result.changed) + len(result.rewritten)
        if self._on_fold is not None:
            self._on_fold(partition, result)
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
        if self._note is not None:
            for key, rec in result.changed.items():
                self._note(key, rec.bucket if rec is not None else None)

    # -- timers ----------------------------------------------------------------

    async def nudge_idle_partitions(self) -> None:
        """Read a held partition's backlog that Faust is not delivering.

        Holes are found when Faust delivers a later event of the partition.
        If Faust committed past unfolded events and the partition then went
        quiet, nothing would be delivered. So a partition that folded
        nothing for two ticks in a row while its state expects an offset
        below the broker's high watermark is read from Kafka directly.
        """
        if self.side.rebalancing():
            return
        async with self._lock:
            held = self.side.holding()
            for partition in held[1]:
                self._idle[partition] = (
                    0 if partition in self._folded_since_tick else self._idle[partition] + 1
                )
            self._folded_since_tick.clear()
            for partition in sorted(held[1]):
                if self._idle[partition] < IDLE_TICKS:
                    continue
                highwater = self.side.highwater(partition)
                if highwater is None:
                    # Faust has fetched nothing of it since the assignment (a
                    # stalled partition, docs/architecture.md): the broker knows.
                    highwater = await self.side.log_end(partition)
                if self._moved(held):
                    return
                expected = await self._start(partition)
                if self._moved(held):
                    return
                if expected >= highwater:
                    continue
                log.warning(
                    "partition %d: state expects offset %d, the log ends at %d and nothing "
                    "arrived; reading the rest from Kafka",
                    partition,
                    expected,
                    highwater,
                )
                if await self._catch_up(partition, expected, highwater, held) < highwater:
                    return

    def expire(self, keys: Iterable[BucketKey]) -> None:
        """Delete expired bucket records, tombstoned in each partition that wrote them.

        No deletes while partitions are moving: they wait for a later call.
        """
        self._expired.extend(keys)
        if self.side.rebalancing():
            return
        # A cache built for an older assignment is dropped at the next fold anyway.
        cache = self._cache if self._built == self._key() else {}
        for key in self._expired:
            cache.pop(key, None)
            raw_key = encode_bucket_key(key)
            raw = self.side.get(BUCKETS, raw_key)
            if raw is not None:
                for partition in BucketRecord.from_bytes(raw).applied:
                    self.side.drop(BUCKETS, raw_key, partition)
        self._expired.clear()

    def sweep_seen(self) -> None:
        """Drop ``seen`` blocks whose newest entry is older than the dedup window."""
        if self.side.rebalancing():
            return  # the next sweep does it; no writes to partitions that may be leaving
        cutoff = self._clock() - DEDUP_WINDOW_S
        ids, _ = self._current()
        # Sightings older than the window decide nothing (rule 2): the index
        # drops them all at once, the table the blocks that hold only those.
        ids.expire(cutoff)
        old = []
        for k, v in self.side.items(SEEN):
            partition = block_partition(k)
            if partition is None:
                if len(v) == _OLD_SEEN.size:  # (partition, offset, time)
                    old.append((k, int(_OLD_SEEN.unpack(v)[0])))
            elif block_newest(v) < cutoff:
                old.append((k, partition))
        for k, partition in old:
            self.side.drop(SEEN, k, partition)

    async def before_revoke(self) -> None:
        """Every write of ours is in the changelog before anyone restores it (rule 3)."""
        await self.side.settled()


def _records(evs: Iterable[Delivered]) -> list[Record]:
    return [
        Record(ev.message.partition, ev.message.offset, ev.value, ev.message.headers or ())
        for ev in evs
    ]
