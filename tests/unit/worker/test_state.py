"""The worker's stores on real RocksDB: seen blocks, the index rebuilt from them, the bucket cache.

Faust is replaced by ``Table``, which holds the partition databases the way
Faust's RocksDB store does (``data._dbs``, ``data._db_for_partition``) and
records changelog messages instead of sending them. What is under test is
ours: what goes to the changelog, and that replaying it elsewhere rebuilds the
same dedup index (the integration tests run the same code under Faust and a
real broker).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from processors.aggregate import BucketKey, HourBucket, hour_of
from processors.worker.fold import DEDUP_WINDOW_S, Message, fold_partition
from processors.worker.records import (
    BLOCK_PREFIX,
    MAX_BLOCK_IDS,
    BucketRecord,
    SeenBlock,
    SeenRecord,
    id_key,
)
from processors.worker.state import (
    CachedBuckets,
    FaustSeen,
    apply_index_plan,
    index_plans,
)
from schemas.codec import validate_event

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)
NOW_S = NOW.timestamp()


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._dbs: dict[int, Rdict] = {}

    def _db_for_partition(self, partition: int) -> Rdict:
        if partition not in self._dbs:
            self._dbs[partition] = Rdict(
                str(self.root / f"p{partition}"), options=Options(raw_mode=True)
            )
        return self._dbs[partition]

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()


class Table:
    """Stand-in for a Faust table: local databases and a recorded changelog."""

    def __init__(self, root: Path) -> None:
        self.data = Store(root)
        self.changelog: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes | None, **_: Any) -> None:
        self.changelog.append((partition, key, value))

    def restore_from(self, changelog: list[tuple[int, bytes, bytes | None]]) -> None:
        """What Faust does on recovery (write the messages), then what SeenTable adds."""
        plans = index_plans(changelog, lambda p, k: self.data._db_for_partition(p).get(k))
        for partition, key, value in changelog:
            db = self.data._db_for_partition(partition)
            if value is None:
                db.delete(key)
            else:
                db[key] = value
        for partition, plan in plans.items():
            apply_index_plan(self.data._db_for_partition(partition), plan)


@pytest.fixture
def table(tmp_path: Path) -> Any:
    t = Table(tmp_path / "a")
    yield t
    t.data.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Any:
    t = Table(tmp_path / "b")
    yield t
    t.data.close()


def ids(n: int) -> list[bytes]:
    return [uuid.uuid4().bytes for _ in range(n)]


def index_of(table: Table, partition: int, wanted: list[bytes]) -> list[bytes | None]:
    return FaustSeen(table).lookup(partition, wanted)


def test_block_round_trip() -> None:
    block = SeenBlock(3, 1234.5, tuple(ids(3)), (7, 9, 2**40))
    back = SeenBlock.from_bytes(block.key, block.to_bytes())
    assert back == block
    assert block.key.startswith(BLOCK_PREFIX)
    assert SeenBlock.first_seen_of(block.to_bytes()) == 1234.5
    assert dict(block.entries())[id_key(block.ids[2])] == SeenRecord(3, 2**40, 1234.5).to_bytes()


def test_one_changelog_message_per_block_not_per_event(table: Table) -> None:
    seen = FaustSeen(table)
    batch = ids(MAX_BLOCK_IDS + 10)
    seen.remember(1, batch, list(range(100, 100 + len(batch))), NOW_S)
    assert len(table.changelog) == 2  # two blocks: the ids do not fit in one
    assert all(key.startswith(BLOCK_PREFIX) for _, key, _ in table.changelog)
    found = [SeenRecord.from_bytes(r).offset for r in seen.lookup(1, batch) if r]
    assert found == list(range(100, 100 + len(batch)))
    assert seen.lookup(1, ids(2)) == [None, None]
    assert seen.index_size() == len(batch)


def test_a_fresh_worker_rebuilds_the_same_index_from_the_changelog(
    table: Table, fresh: Table
) -> None:
    seen = FaustSeen(table)
    first, second = ids(50), ids(30)
    seen.remember(0, first, list(range(50)), NOW_S)
    seen.remember(2, second, list(range(30)), NOW_S + 5)
    fresh.restore_from(table.changelog)
    for p, batch in ((0, first), (2, second)):
        assert index_of(fresh, p, batch) == index_of(table, p, batch)
        assert None not in index_of(fresh, p, batch)


def test_sweep_forgets_blocks_past_the_hour_and_its_tombstones_replay(
    table: Table, fresh: Table
) -> None:
    seen = FaustSeen(table)
    old, recent = ids(20), ids(20)
    seen.remember(0, old, list(range(20)), NOW_S - DEDUP_WINDOW_S - 1)
    seen.remember(0, recent, list(range(20, 40)), NOW_S - 60)
    assert seen.sweep(NOW_S) == 1
    assert index_of(table, 0, old) == [None] * 20
    assert None not in index_of(table, 0, recent)
    assert table.changelog[-1][2] is None  # the tombstone
    # Replayed elsewhere: block, newer block, tombstone -> only the recent ids.
    fresh.restore_from(table.changelog)
    assert index_of(fresh, 0, old) == [None] * 20
    assert index_of(fresh, 0, recent) == index_of(table, 0, recent)
    assert FaustSeen(fresh).index_size() == 20


def test_an_id_counted_again_after_its_hour_survives_the_old_blocks_sweep(
    table: Table, fresh: Table
) -> None:
    seen = FaustSeen(table)
    (x,) = ids(1)
    seen.remember(0, [x], [5], NOW_S - 2 * DEDUP_WINDOW_S)
    seen.remember(0, [x], [900], NOW_S - 60)  # the same id, counted again later
    assert seen.sweep(NOW_S) == 1
    (entry,) = index_of(table, 0, [x])
    assert entry is not None and SeenRecord.from_bytes(entry).offset == 900
    fresh.restore_from(table.changelog)
    assert index_of(fresh, 0, [x]) == [entry]


def test_replaying_an_older_block_never_overwrites_a_later_entry(table: Table) -> None:
    (x,) = ids(1)
    later = SeenRecord(0, 900, NOW_S).to_bytes()
    db = table.data._db_for_partition(0)
    db[id_key(x)] = later
    older = SeenBlock(0, NOW_S - 2 * DEDUP_WINDOW_S, (x,), (5,))
    table.restore_from([(0, older.key, older.to_bytes())])
    assert db[id_key(x)] == later


def test_the_fold_drops_a_duplicate_only_a_restored_index_knows(
    table: Table, fresh: Table, event_factory: Any
) -> None:
    """End to end through fold_partition: the second worker never saw the original."""
    ts = (NOW - timedelta(minutes=5)).isoformat()
    a, b = (validate_event(event_factory(ts=ts), now=NOW) for _ in range(2))
    one = CachedBuckets(table)
    stats = fold_partition(
        [Message(0, 0, a), Message(0, 1, b)], one, FaustSeen(table), now=NOW, now_s=NOW_S
    )
    assert stats.counted == 2
    fresh.restore_from(table.changelog)
    two = CachedBuckets(fresh)
    stats = fold_partition([Message(0, 2, a)], two, FaustSeen(fresh), now=NOW, now_s=NOW_S + 9)
    assert (stats.counted, stats.duplicates) == (0, 1)
    key = BucketKey(a.model, a.provider, hour_of(a.ts))
    rec = two.load(0, key)
    assert rec is not None and rec.bucket.requests == 2  # the buckets came along too


def test_bucket_cache_is_bounded_and_forgets_revoked_partitions(table: Table) -> None:
    cache = CachedBuckets(table, max_records=3)
    keys = [BucketKey("m", "p", h) for h in range(5)]
    for k in keys:
        b = HourBucket()
        b.requests = k.hour + 1
        cache.save(1, {k: BucketRecord(b, {1: k.hour})})
    assert len(cache._cache) == 3
    # Evicted records come back from the database, equal to what was saved.
    rec = cache.load(1, keys[0])
    assert rec is not None and rec.bucket.requests == 1
    assert cache.bucket(keys[4]) is not None
    # Revoked: the key is no longer ours to read, and nothing reopens its database.
    table.data._dbs.pop(1).close()
    cache.forget(1)
    assert cache.bucket(keys[4]) is None
    assert 1 not in table.data._dbs
    cache.drop(keys[4])
    assert 1 not in table.data._dbs and not table.changelog[5:]


def test_drop_deletes_and_tombstones_an_expired_bucket(table: Table) -> None:
    cache = CachedBuckets(table)
    key = BucketKey("m", "p", 7)
    cache.save(2, {key: BucketRecord(HourBucket(), {2: 10})})
    assert list(cache.keys()) == [key]
    cache.drop(key)
    assert cache.bucket(key) is None
    assert list(cache.keys()) == []
    assert table.changelog[-1][1:] == (table.changelog[0][1], None)
