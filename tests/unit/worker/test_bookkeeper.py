"""PartitionBook against a fake of FaustSide: the rules of docs/architecture.md
("Exactly-once effect on at-least-once delivery") without Faust or a broker.

The fake keeps, per worker, a local store (dicts per table and partition) and
the writes the broker has not acknowledged yet; ``settled`` moves them into
the shared changelog, and a SIGKILL drops them. A new owner of a partition is
restored from the changelog alone. The events topic is a list of records per
partition, each record one event of its own model, so a bucket that is not
rewritten shows as a missing model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pipeline_util import make_event

from processors.aggregate import BucketKey
from processors.worker.bookkeeper import PartitionBook, restorable
from processors.worker.fold import DEDUP_WINDOW_S, Record
from processors.worker.records import (
    NEXT_OFFSET_KEY,
    BucketRecord,
    decode_bucket_key,
    decode_offset,
    encode_bucket_key,
)
from processors.worker.tables import BUCKETS, SEEN
from schemas.event_record import RECORD_HEADERS

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)
NOW_S = NOW.timestamp()


def event(model: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("ts", (NOW - timedelta(minutes=5)).isoformat())
    return make_event(model=model, provider="p", **kw)


@dataclass
class Kafka:
    """The broker: the events topic, the group's committed offsets, the changelogs."""

    logs: dict[int, list[Record]] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    changelog: list[tuple[str, int, bytes, bytes | None]] = field(default_factory=list)

    def produce(self, partition: int, *docs: dict[str, Any]) -> list[int]:
        """One record per event; returns their offsets."""
        log = self.logs.setdefault(partition, [])
        out = []
        for doc in docs:
            log.append(Record(partition, len(log), orjson.dumps(doc), RECORD_HEADERS))
            out.append(len(log) - 1)
        return out


@dataclass
class Msg:
    partition: int
    offset: int
    generation_id: int | None
    headers: Any
    acked: bool = False


@dataclass
class Ev:
    message: Msg
    value: bytes | None


class TableView(MutableMapping[bytes, bytes]):
    """One partition's part of a table: writes go to the store and the producer."""

    def __init__(self, side: FakeSide, table: str, partition: int) -> None:
        self.side, self.table, self.partition = side, table, partition
        self.data = side.local[table].setdefault(partition, {})

    def __getitem__(self, key: bytes) -> bytes:
        return self.data[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value
        self.side.key_index[key] = self.partition
        self.side.pending.append((self.table, self.partition, key, value))

    def __delitem__(self, key: bytes) -> None:
        raise AssertionError("the book deletes through drop()")

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class FakeSide:
    """FaustSide over dicts: one worker's view of Faust and the broker."""

    def __init__(self, kafka: Kafka, *, generation: int = 1, held: set[int] | None = None) -> None:
        self.kafka = kafka
        self.generation = generation
        self.held = {0} if held is None else held
        self.moving = False
        self.local: dict[str, dict[int, dict[bytes, bytes]]] = {BUCKETS: {}, SEEN: {}}
        self.pending: list[tuple[str, int, bytes, bytes | None]] = []
        #: Where a key was last written, as Faust's store remembers (``_key_index``).
        self.key_index: dict[bytes, int] = {}
        self.reads: list[tuple[int, int, int]] = []
        self.unsettled_at_read: list[int] = []
        self.on_read: Any = None
        self.hold_writes: asyncio.Event | None = None
        self.stalled: set[int] = set()
        #: the partitions with writes made so far, at each ``flush_changelog``
        self.flushed: list[set[int]] = []

    @classmethod
    def restored(cls, kafka: Kafka, **kw: Any) -> FakeSide:
        """A new owner on a new disk: its state is what the changelog holds (rule 6 applies)."""
        side = cls(kafka, **kw)
        for table, partition, key, value in kafka.changelog:
            store = side.local[table].setdefault(partition, {})
            if table == BUCKETS:
                ev = Ev(Msg(partition, 0, None, ()), None)
                ev.message.key = key  # type: ignore[attr-defined]
                ev.message.value = value  # type: ignore[attr-defined]
                if not restorable([ev], lambda p, k: side.local[BUCKETS].get(p, {}).get(k)):
                    continue
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
        return side

    def reassign(self, *, generation: int | None = None, held: set[int] | None = None) -> None:
        self.generation = self.generation + 1 if generation is None else generation
        if held is not None:
            self.held = held

    def kill(self) -> None:
        """SIGKILL: the local store stays, unacknowledged writes never leave."""
        self.pending.clear()

    # FaustSide
    def holding(self) -> tuple[int, frozenset[int]]:
        return self.generation, frozenset(self.held)

    def rebalancing(self) -> bool:
        return self.moving

    def highwater(self, partition: int) -> int | None:
        if partition in self.stalled:
            return None  # Faust fetched nothing of it
        return len(self.kafka.logs.get(partition, []))

    async def committed(self, partition: int) -> int | None:
        return self.kafka.committed.get(partition)

    async def log_start(self, partition: int) -> int:
        return 0

    async def log_end(self, partition: int) -> int:
        return len(self.kafka.logs.get(partition, []))

    async def read(self, partition: int, start: int, end: int) -> list[Record]:
        self.reads.append((partition, start, end))
        self.unsettled_at_read.append(len(self.pending))
        if self.on_read is not None:
            self.on_read(partition, start, end)
        return [r for r in self.kafka.logs.get(partition, []) if start <= r.offset < end]

    async def flush_changelog(self) -> None:
        self.flushed.append({p for _, p, _, _ in self.pending})
        await asyncio.sleep(0)

    async def settled(self) -> None:
        await asyncio.sleep(0)
        if self.hold_writes is not None:
            await self.hold_writes.wait()
        self.kafka.changelog.extend(self.pending)
        self.pending.clear()

    @contextlib.contextmanager
    def at(self, partition: int) -> Iterator[tuple[TableView, TableView]]:
        yield TableView(self, BUCKETS, partition), TableView(self, SEEN, partition)

    def items(self, table: str) -> list[tuple[bytes, bytes]]:
        return [
            kv for p, store in self.local[table].items() if p in self.held for kv in store.items()
        ]

    def get(self, table: str, key: bytes) -> bytes | None:
        last = self.key_index.get(key)
        for p in sorted(self.held, key=lambda p: p != last):
            if key in self.local[table].get(p, {}):
                return self.local[table][p][key]
        return None

    def drop(self, table: str, key: bytes, partition: int) -> None:
        for store in self.local[table].values():
            store.pop(key, None)
        self.pending.append((table, partition, key, None))

    def leave_unacknowledged(self, events: Any) -> int:
        n = 0
        for ev in events:
            if not ev.message.acked:
                ev.message.acked = True
                n += 1
        return n

    # what Faust would hand the agent
    def deliver(
        self, partition: int, offsets: list[int], generation: int | None = None
    ) -> list[Ev]:
        gen = self.generation if generation is None else generation
        log = self.kafka.logs[partition]
        return [Ev(Msg(partition, o, gen, log[o].headers), log[o].value) for o in offsets]


def book(side: FakeSide, **kw: Any) -> PartitionBook:
    kw.setdefault("reread_max", 1_000)
    return PartitionBook(side, clock=kw.pop("clock", lambda: NOW_S), **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def fold(b: PartitionBook, batch: list[Ev], kafka: Kafka | None = None) -> list[Ev]:
    """Fold a batch; what Faust then acknowledges moves the group's commit on."""
    run(b.fold_batch(batch))
    if kafka is not None:
        for ev in batch:
            if not ev.message.acked:
                p = ev.message.partition
                kafka.committed[p] = max(kafka.committed.get(p, 0), ev.message.offset + 1)
    return batch


def counts(local: dict[int, dict[bytes, bytes]]) -> dict[str, int]:
    """Requests per model in a buckets store."""
    out: dict[str, int] = {}
    for store in local.values():
        for k, v in store.items():
            if k != NEXT_OFFSET_KEY:
                model = decode_bucket_key(k).model
                out[model] = out.get(model, 0) + BucketRecord.from_bytes(v).bucket.requests
    return out


def restored_counts(kafka: Kafka) -> dict[str, int]:
    return counts(FakeSide.restored(kafka).local[BUCKETS])


def models(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [event(f"m/{i}") for i in range(start, start + n)]


def want(n: int) -> dict[str, int]:
    return {f"m/{i}": 1 for i in range(n)}


def next_offset(side: FakeSide, partition: int = 0) -> int:
    return decode_offset(side.local[BUCKETS][partition][NEXT_OFFSET_KEY])


# -- rule 1 --------------------------------------------------------------------


def test_rule1_a_redelivered_record_is_not_counted_again() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(5))
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0, 1, 2, 3, 4]))
    fold(b, side.deliver(0, [2, 3, 4]))  # Faust redelivers after a crash
    assert b.counters.counted == 5 and b.counters.replayed == 3
    assert counts(side.local[BUCKETS]) == want(5)


def test_rule1_a_redelivered_copy_is_not_counted_as_a_duplicate_again() -> None:
    kafka = Kafka()
    copy = event("m/x")
    kafka.produce(0, copy, event("m/y"), copy)
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0, 1, 2]))
    fold(b, side.deliver(0, [1, 2]))  # Faust delivers them again (a seek)
    assert (b.counters.counted, b.counters.duplicates, b.counters.replayed) == (2, 1, 2)
    assert counts(side.local[BUCKETS]) == {"m/x": 1, "m/y": 1}


def test_rule1_the_same_record_twice_in_one_batch_counts_once() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(3))
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0, 1, 1, 2, 0]))
    assert b.counters.counted == 3
    assert counts(side.local[BUCKETS]) == want(3)


# -- rule 2 --------------------------------------------------------------------


def test_rule2_a_copy_in_another_record_counts_once_even_after_a_handover() -> None:
    kafka = Kafka()
    copy = event("m/x")
    kafka.produce(0, copy)
    first = FakeSide(kafka)
    fold(book(first), first.deliver(0, [0]))
    run(first.settled())
    # A second worker holding the partition restores the seen blocks, then
    # the gateway's retry of the same event arrives.
    kafka.produce(0, copy)
    second = FakeSide.restored(kafka, generation=2)
    b = book(second)
    fold(b, second.deliver(0, [1]))
    assert b.counters.duplicates == 1 and b.counters.counted == 0
    assert counts(second.local[BUCKETS]) == {"m/x": 1}


def test_rule2_the_seen_index_is_rebuilt_when_the_generation_changes() -> None:
    """Another worker folded a partition we get back: its seen blocks, restored
    by Faust into our store, must be in the index we dedup with."""
    kafka = Kafka()
    copy = event("m/x")
    kafka.produce(1, copy)
    side = FakeSide(kafka, held={0})
    b = book(side)
    kafka.produce(0, event("m/y"))
    fold(b, side.deliver(0, [0]))  # the index of generation 1 is built
    other = FakeSide(kafka, held={1})
    fold(book(other), other.deliver(1, [0]))
    run(other.settled())
    # Partition 1 moves to us: Faust restores its changelog into our store.
    side.local[SEEN][1] = dict(other.local[SEEN][1])
    side.local[BUCKETS][1] = dict(other.local[BUCKETS][1])
    side.reassign(held={0, 1})
    kafka.produce(0, copy)  # the copy, on our own partition
    fold(b, side.deliver(0, [1]))
    assert b.counters.duplicates == 1


def test_rule2_the_seen_index_is_rebuilt_after_the_tables_are_restored() -> None:
    """The generation changes when the group rejoins, before Faust restores the
    tables: an index built in between (by a timer) misses the partitions
    coming back, so the restoration itself must trigger a rebuild."""
    kafka = Kafka()
    copy = event("m/x")
    kafka.produce(1, copy)
    other = FakeSide(kafka, held={1})
    fold(book(other), other.deliver(1, [0]))
    run(other.settled())
    side = FakeSide(kafka, held={0})
    b = book(side)
    kafka.produce(0, event("m/y"))
    fold(b, side.deliver(0, [0]))
    side.reassign(held={0, 1})
    b.sweep_seen()  # builds the new generation's index: partition 1 not restored yet
    side.local[SEEN][1] = dict(other.local[SEEN][1])
    side.local[BUCKETS][1] = dict(other.local[BUCKETS][1])
    b.tables_restored()  # Faust's recovery callback
    kafka.produce(0, copy)
    fold(b, side.deliver(0, [1]))
    assert b.counters.duplicates == 1 and b.counters.counted == 1


# -- rule 3 --------------------------------------------------------------------


def test_rule3_a_batch_returns_only_once_its_writes_are_in_the_changelog() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(3))
    side = FakeSide(kafka)
    b = book(side)

    async def go() -> None:
        side.hold_writes = asyncio.Event()
        task = asyncio.create_task(b.fold_batch(side.deliver(0, [0, 1, 2])))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()  # the broker has not acknowledged the writes yet
        side.hold_writes.set()
        await task

    run(go())
    assert side.pending == []
    assert restored_counts(kafka) == want(3)
    run(b.before_revoke())  # and a revoke waits the same way
    assert side.pending == []


def test_rule3_a_partition_s_writes_are_sent_before_the_next_partition_folds() -> None:
    """Sent early (the broker works while we fold); acknowledged still only at the end."""
    kafka = Kafka()
    kafka.produce(0, *models(2))
    kafka.produce(1, *models(3, start=2))
    side = FakeSide(kafka, held={0, 1})
    fold(book(side), side.deliver(0, [0, 1]) + side.deliver(1, [0, 1, 2]))
    assert side.flushed == [{0}, {0, 1}]
    assert side.pending == []
    assert restored_counts(kafka) == want(5)


def test_rule3_each_reread_step_is_in_the_changelog_before_the_next_is_read() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(10))
    side = FakeSide(kafka)
    b = book(side, reread_max=3)
    fold(b, side.deliver(0, [0]))
    fold(b, side.deliver(0, [9]))  # 1..8 missing: read in steps of 3
    assert side.reads == [(0, 1, 4), (0, 4, 7), (0, 7, 9)]
    assert side.unsettled_at_read == [0, 0, 0]
    assert b.counters.reread == 8
    assert restored_counts(kafka) == want(10)


# -- rule 4 --------------------------------------------------------------------


def test_rule4_events_of_an_older_generation_or_a_lost_partition_are_left_unacknowledged() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(3))
    kafka.produce(1, *models(1, 10))
    side = FakeSide(kafka, generation=5, held={0})
    b = book(side)
    old = side.deliver(0, [0], generation=4)  # fetched before the last rebalance
    lost = side.deliver(1, [0])  # partition 1 went to another worker
    live = side.deliver(0, [1, 2])
    batch = old + live + lost
    fold(b, batch)
    assert [e.message.acked for e in batch] == [True, False, False, True]
    assert b.counters.fenced == 2
    # Offset 0 was fenced, so Faust delivering 1 and 2 left a hole at 0: it
    # was read, not skipped; partition 1 was not touched.
    assert side.reads == [(0, 0, 1)]
    assert counts(side.local[BUCKETS]) == want(3)
    assert 1 not in side.local[BUCKETS]


def test_rule4_a_batch_arriving_during_a_rebalance_waits_for_it_to_end() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(2))
    side = FakeSide(kafka)
    b = book(side)

    async def go() -> None:
        side.moving = True
        task = asyncio.create_task(b.fold_batch(side.deliver(0, [0, 1])))
        await asyncio.sleep(0.2)
        assert not task.done() and side.local[BUCKETS] == {}
        side.moving = False
        await task

    run(go())
    assert counts(side.local[BUCKETS]) == want(2)


def test_rule4_a_batch_arriving_during_a_rebalance_folds_only_the_new_generation() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(2))
    kafka.produce(1, *models(1, 10))
    side = FakeSide(kafka, held={0, 1})
    b = book(side)
    batch = side.deliver(0, [0, 1]) + side.deliver(1, [0])

    async def go() -> None:
        side.moving = True
        task = asyncio.create_task(b.fold_batch(batch))
        await asyncio.sleep(0.1)
        side.reassign(held={1})  # partition 0 left us meanwhile
        side.moving = False
        await task

    run(go())
    assert all(e.message.acked for e in batch)  # all of generation 1: none folded
    assert side.local[BUCKETS] == {}


def test_rule4_partitions_moving_during_a_reread_stop_the_batch_unacknowledged() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(5))
    kafka.produce(1, *models(1, 10))
    side = FakeSide(kafka, held={0, 1})
    b = book(side)
    fold(b, side.deliver(0, [0]))
    side.on_read = lambda *_: side.reassign(held={1})
    batch = side.deliver(0, [4]) + side.deliver(1, [0])
    fold(b, batch)
    assert all(e.message.acked for e in batch)
    assert counts(side.local[BUCKETS]) == want(1)  # nothing of the hole, nor after it
    assert next_offset(side) == 1


def test_rule4_a_batch_that_fails_half_way_is_left_unacknowledged() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(5))
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0]))

    def broker_error(*_: Any) -> None:
        raise ConnectionError("broker went away")

    side.on_read = broker_error
    batch = side.deliver(0, [1, 4])
    with pytest.raises(ConnectionError):
        run(b.fold_batch(batch))
    assert all(e.message.acked for e in batch)


# -- rule 5: holes, re-reads, catch-up, idle partitions ------------------------


def test_rule5_a_hole_is_read_from_kafka_and_folded_in_offset_order() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(8))
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0, 1, 2, 6, 7]))
    assert side.reads == [(0, 3, 6)]
    assert next_offset(side) == 8
    assert counts(side.local[BUCKETS]) == want(8)


def test_rule5_a_partition_without_state_starts_at_the_log_start() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(6))
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [4, 5]))
    assert side.reads == [(0, 0, 4)]
    assert counts(side.local[BUCKETS]) == want(6)


def test_rule5_committed_offsets_ahead_of_the_state_lose_nothing() -> None:
    """The group committed past events the state never folded (Faust dropped
    re-fetched messages): the stored expected offset, restored by the next
    owner, finds the run and it is read in steps."""
    kafka = Kafka()
    kafka.produce(0, *models(20))
    first = FakeSide(kafka)
    fold(book(first), first.deliver(0, [0, 1, 2]), kafka)
    kafka.committed[0] = 15  # committed over 3..14
    second = FakeSide.restored(kafka, generation=2)
    b = book(second, reread_max=5)
    fold(b, second.deliver(0, [15, 16, 17, 18, 19]), kafka)
    assert second.reads == [(0, 3, 8), (0, 8, 13), (0, 13, 15)]
    assert restored_counts(kafka) == want(20)


def test_idle_partition_behind_the_high_watermark_is_read_after_two_idle_ticks() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(3))
    kafka.produce(1, *models(2, 10))
    side = FakeSide(kafka, held={0, 1})
    b = book(side, reread_max=2)
    fold(b, side.deliver(0, [0]))
    fold(b, side.deliver(1, [0, 1]))
    run(b.nudge_idle_partitions())  # both folded since the last tick
    fold(b, side.deliver(1, []))
    run(b.nudge_idle_partitions())  # one idle tick
    assert side.reads == []
    run(b.nudge_idle_partitions())  # two: partition 0 is behind (3 > 1), partition 1 is not
    assert side.reads == [(0, 1, 3)]
    assert counts(side.local[BUCKETS]) == {**want(3), "m/10": 1, "m/11": 1}


def test_a_stalled_partition_faust_never_fetched_is_read_from_kafka() -> None:
    """Faust knows no high watermark for a partition it has not fetched since
    the assignment; the nudge asks the broker instead of skipping it."""
    kafka = Kafka()
    kafka.produce(0, *models(3))
    side = FakeSide(kafka, held={0})
    side.stalled.add(0)
    b = book(side)
    for _ in range(3):
        run(b.nudge_idle_partitions())
    assert side.reads == [(0, 0, 3)]
    assert counts(side.local[BUCKETS]) == want(3)


def test_idle_nudge_waits_while_partitions_move() -> None:
    kafka = Kafka()
    kafka.produce(0, *models(3))
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0]))
    side.moving = True
    for _ in range(3):
        run(b.nudge_idle_partitions())
    assert side.reads == []


# -- rule 6 --------------------------------------------------------------------


def test_rule6_a_late_bucket_record_from_a_former_owner_is_not_restored() -> None:
    kafka = Kafka()
    kafka.produce(0, *[event("m/a") for _ in range(4)])
    new = FakeSide(kafka)
    fold(book(new), new.deliver(0, [0, 1, 2, 3]))
    run(new.settled())
    late = FakeSide(kafka)  # folded 0..1 only; its write lands after the new owner's
    fold(book(late), late.deliver(0, [0, 1]))
    run(late.settled())
    assert restored_counts(kafka) == {"m/a": 4}


# -- rule 7 and the known gap, closed ------------------------------------------


def _killed_mid_batch(kafka: Kafka) -> FakeSide:
    """A worker folded 0..4 (acknowledged, committed 5), then 5..9 into its local
    store, and was SIGKILLed before those changelog writes left."""
    kafka.produce(0, *models(10))
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0, 1, 2, 3, 4]), kafka)

    async def killed() -> None:
        side.hold_writes = asyncio.Event()
        task = asyncio.create_task(b.fold_batch(side.deliver(0, [5, 6, 7, 8, 9])))
        for _ in range(20):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run(killed())
    side.kill()
    side.hold_writes = None
    assert kafka.committed[0] == 5 and next_offset(side) == 10  # local state ahead
    assert restored_counts(kafka) == want(5)
    return side


def test_rule7_a_replay_rewrites_what_the_sigkill_lost() -> None:
    kafka = Kafka()
    side = _killed_mid_batch(kafka)
    side.reassign()  # restarted on the same disk
    b = book(side)
    fold(b, side.deliver(0, [5, 6, 7, 8, 9]), kafka)  # Faust redelivers everything
    assert b.counters.replayed == 5 and b.counters.counted == 0
    # The next owner, restored from the changelog alone, has every event.
    assert restored_counts(kafka) == want(10)


def test_gap_closed_redeliveries_faust_drops_after_a_sigkill_are_read_and_rewritten() -> None:
    kafka = Kafka()
    side = _killed_mid_batch(kafka)
    side.reassign()
    b = book(side)
    # Faust drops 5..7 (below its read offset) and delivers 8 and 9 only.
    fold(b, side.deliver(0, [8, 9]), kafka)
    assert side.reads == [(0, 5, 8)]
    assert b.counters.counted == 0
    assert restored_counts(kafka) == want(10)
    assert decode_offset(FakeSide.restored(kafka).local[BUCKETS][0][NEXT_OFFSET_KEY]) == 10


def test_gap_closed_a_quiet_partition_is_read_from_the_committed_offset() -> None:
    kafka = Kafka()
    side = _killed_mid_batch(kafka)
    side.reassign()
    b = book(side)
    run(b.nudge_idle_partitions())
    run(b.nudge_idle_partitions())  # Faust delivered nothing for two ticks
    assert side.reads == [(0, 5, 10)]
    assert restored_counts(kafka) == want(10)


# -- memory per generation, expiry, sweep --------------------------------------


def test_the_bucket_cache_is_dropped_when_the_generation_changes() -> None:
    kafka = Kafka()
    kafka.produce(0, *[event("m/a") for _ in range(3)])
    side = FakeSide(kafka)
    b = book(side)
    fold(b, side.deliver(0, [0]), kafka)  # the record of m/a is cached
    # The partition went away and came back: another worker folded offset 1
    # meanwhile, and Faust restored its record into our store.
    other = FakeSide.restored(kafka, generation=2)
    fold(book(other), other.deliver(0, [1]), kafka)
    assert other.reads == []
    side.local[BUCKETS][0] = dict(other.local[BUCKETS][0])
    side.reassign(generation=3)
    fold(b, side.deliver(0, [2]), kafka)
    assert side.reads == []
    assert counts(side.local[BUCKETS]) == {"m/a": 3}


def test_expired_buckets_are_tombstoned_per_partition_but_not_while_rebalancing() -> None:
    kafka = Kafka()
    kafka.produce(0, event("m/a"))
    kafka.produce(1, event("m/a"))
    side = FakeSide(kafka, held={0, 1})
    b = book(side)
    fold(b, side.deliver(0, [0]) + side.deliver(1, [0]))
    side.pending.clear()
    hour = int(NOW.timestamp()) // 3600
    key = BucketKey("m/a", "p", hour)
    raw_key = encode_bucket_key(key)
    # The key's record names each partition that folded into it: one tombstone each.
    applied = BucketRecord.from_bytes(side.get(BUCKETS, raw_key) or b"").applied
    assert set(applied) == {0, 1}
    side.moving = True
    b.expire([key])
    assert side.pending == []
    side.moving = False
    b.expire([])  # a later tick does it
    tombstones = {(t, p, k) for t, p, k, v in side.pending if v is None}
    assert tombstones == {(BUCKETS, 0, raw_key), (BUCKETS, 1, raw_key)}
    assert side.get(BUCKETS, raw_key) is None


def test_old_seen_blocks_are_swept_and_forgotten_but_not_while_rebalancing() -> None:
    kafka = Kafka()
    copy = event("m/a")
    kafka.produce(0, copy)
    clock = [NOW_S]
    side = FakeSide(kafka)
    b = book(side, clock=lambda: clock[0])
    fold(b, side.deliver(0, [0]))
    run(side.settled())
    blocks = set(side.local[SEEN][0])
    clock[0] += DEDUP_WINDOW_S + 1
    side.moving = True
    b.sweep_seen()
    assert set(side.local[SEEN][0]) == blocks
    side.moving = False
    b.sweep_seen()
    assert side.local[SEEN][0] == {}
    assert b.seen_index_size() == 0
    assert {(t, p, k) for t, p, k, _ in side.pending} == {(SEEN, 0, k) for k in blocks}
    # Out of the index too: a copy after the window counts again (docs/definitions.md).
    kafka.produce(0, dict(copy, ts=(NOW + timedelta(minutes=55)).isoformat()))
    fold(b, side.deliver(0, [1]))
    assert b.counters.duplicates == 0 and b.counters.counted == 2
