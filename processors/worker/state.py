"""The worker's two Faust tables behind the fold's store protocols.

Why not plain ``table[key] = value``: Faust sends one changelog message per
write and looks keys up through several layers per call. At tens of thousands
of events a second that machinery, not the maths, was the cost (one ``seen``
message per event took ~60% of the worker's time). So:

* ``seen`` sends one *block* per partition per batch (the ids a batch counted
  first, with their offsets) and keeps the per-event lookup entries only in
  the local RocksDB of that partition. ``SeenTable`` rebuilds those entries
  from the blocks whenever Faust restores the table from its changelog, so
  after a crash or on another worker the index is the same.
* ``buckets`` keeps the records it decoded in a bounded LRU, so a bucket that
  changes every batch is decoded once, not once per batch. Writes still go to
  the store and the changelog once per changed key per batch.

Both read and write the partition's RocksDB directly (``Store._db_for_partition``,
the call Faust's own ``_get``/``_set`` make) and send changelog messages with
``Collection.send_changelog``, which Faust flushes before it commits offsets.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import faust
from rocksdict import WriteBatch

from processors.aggregate import BucketKey, HourBucket
from processors.worker.fold import DEDUP_WINDOW_S
from processors.worker.records import (
    BLOCK_PREFIX,
    ID_PREFIX,
    MAX_BLOCK_IDS,
    BucketRecord,
    SeenBlock,
    SeenRecord,
    decode_bucket_key,
    encode_bucket_key,
    id_key,
)

__all__ = [
    "BUCKET_CACHE_MAX",
    "CachedBuckets",
    "FaustSeen",
    "SeenTable",
    "apply_index_plan",
    "index_plans",
]

log = logging.getLogger(__name__)

#: Decoded bucket records kept between batches. Live traffic touches about one
#: bucket per (model, provider); a week-long catch-up touches thousands.
BUCKET_CACHE_MAX = 8_192
_FAUST_KEYS = b"__faust"  # Faust keeps its persisted offset in the same database


#: (put?, SeenRecord bytes): put the entry, or delete it if it still holds these bytes.
_Plan = tuple[bool, bytes]


def _dbs(table: Any) -> dict[int, Any]:
    dbs: dict[int, Any] = table.data._dbs
    return dbs


def _db(table: Any, partition: int) -> Any:
    return table.data._db_for_partition(partition)


class SeenTable(faust.Table):
    """The ``seen`` table: restoring a block also restores its per-event entries."""

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = list(batch)
        plans = index_plans(
            ((ev.message.partition, ev.message.key, ev.message.value) for ev in events),
            lambda partition, key: _db(self, partition).get(key),
        )
        super().apply_changelog_batch(events)
        for partition, plan in plans.items():
            apply_index_plan(_db(self, partition), plan)


def index_plans(
    changelog: Iterable[tuple[int, bytes | None, bytes | None]],
    stored_block: Callable[[int, bytes], bytes | None],
) -> dict[int, dict[bytes, _Plan]]:
    """What each index entry should become, per partition, for a run of changelog
    messages (partition, key, value) in order. ``stored_block`` reads a block as
    stored before this run (a tombstone needs the ids of what it deletes)."""
    plans: dict[int, dict[bytes, _Plan]] = {}
    blocks: dict[tuple[int, bytes], bytes | None] = {}  # this run's latest
    for partition, key, value in changelog:
        if not key or not key.startswith(BLOCK_PREFIX):
            continue
        plan = plans.setdefault(partition, {})
        if value is not None:
            for k, v in SeenBlock.from_bytes(key, value).entries():
                plan[k] = (True, v)
        else:
            bk = (partition, key)
            old = blocks[bk] if bk in blocks else stored_block(partition, key)
            if old is not None:
                for k, v in SeenBlock.from_bytes(key, old).entries():
                    if plan.get(k, (True, v))[1] == v:  # not counted again since
                        plan[k] = (False, v)
        blocks[(partition, key)] = value
    return plans


def apply_index_plan(db: Any, plan: Mapping[bytes, _Plan]) -> None:
    """Write index entries; never replace a later ``first_seen`` with an earlier one.

    (A replayed changelog may hold a block older than an entry already on disk
    for the same id: the id counted again after its hour ran out.)
    """
    if not plan:
        return
    keys = list(plan)
    wb = WriteBatch(raw_mode=True)
    for k, cur in zip(keys, db[keys], strict=True):
        put, value = plan[k]
        if not put:
            if cur == value:
                wb.delete(k)
        elif cur is None or (
            SeenRecord.from_bytes(cur).first_seen <= SeenRecord.from_bytes(value).first_seen
        ):
            wb.put(k, value)
    db.write(wb)


class FaustSeen:
    """``SeenIndex`` over a ``SeenTable``: one multi-get and one block per batch."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def lookup(self, partition: int, ids: Sequence[bytes]) -> list[bytes | None]:
        if not ids:
            return []
        result: list[bytes | None] = _db(self._table, partition)[[id_key(i) for i in ids]]
        return result

    def remember(
        self, partition: int, ids: Sequence[bytes], offsets: Sequence[int], now_s: float
    ) -> None:
        db = _db(self._table, partition)
        for lo in range(0, len(ids), MAX_BLOCK_IDS):
            block = SeenBlock(
                partition,
                now_s,
                tuple(ids[lo : lo + MAX_BLOCK_IDS]),
                tuple(offsets[lo : lo + MAX_BLOCK_IDS]),
            )
            raw = block.to_bytes()
            wb = WriteBatch(raw_mode=True)
            for k, v in block.entries():
                wb.put(k, v)
            wb.put(block.key, raw)
            db.write(wb)
            self._table.send_changelog(
                partition, block.key, raw, key_serializer="raw", value_serializer="raw"
            )

    def sweep(self, now_s: float | None = None) -> int:
        """Forget blocks older than the dedup hour, their entries, and tombstone them."""
        cutoff = (time.time() if now_s is None else now_s) - DEDUP_WINDOW_S
        dropped = 0
        for partition, db in list(_dbs(self._table).items()):
            old: list[tuple[bytes, bytes]] = []
            for key, raw in db.items(from_key=BLOCK_PREFIX):
                if not key.startswith(BLOCK_PREFIX):
                    break
                if SeenBlock.first_seen_of(raw) < cutoff:
                    old.append((key, raw))
            for key, raw in old:
                block = SeenBlock.from_bytes(key, raw)
                mine = dict(block.entries())
                keys = list(mine)
                wb = WriteBatch(raw_mode=True)
                # Only entries that still point at this block: an id counted
                # again later has a newer entry of its own.
                for k, cur in zip(keys, db[keys], strict=True):
                    if cur == mine[k]:
                        wb.delete(k)
                wb.delete(key)
                db.write(wb)
                self._table.send_changelog(
                    partition, key, None, key_serializer="raw", value_serializer="raw"
                )
                dropped += 1
        return dropped

    def index_size(self) -> int:
        """Per-event entries held locally (for logs and tests)."""
        n = 0
        for db in _dbs(self._table).values():
            for key in db.keys(from_key=ID_PREFIX):
                if not key.startswith(ID_PREFIX):
                    break
                n += 1
        return n


class CachedBuckets:
    """``BucketStore`` over the ``buckets`` table, with decoded records kept in an LRU.

    A cached record is only valid while this worker owns its partition: the
    app calls ``forget`` for every partition revoked in a rebalance (another
    worker may change the bucket meanwhile). No reference to Faust's database
    objects is kept here: a handle held past a revocation would keep
    RocksDB's lock and stop the partition from reopening.
    """

    def __init__(self, table: Any, max_records: int = BUCKET_CACHE_MAX) -> None:
        self._table = table
        self._max = max_records
        self._cache: OrderedDict[tuple[int, BucketKey], BucketRecord] = OrderedDict()
        #: Which partition holds a key, for readers that know only the key.
        self._where: dict[BucketKey, int] = {}

    def _db(self, partition: int) -> Any:
        return _db(self._table, partition)

    def forget(self, partition: int | None = None) -> None:
        """Drop cached records (of one partition, or all)."""
        if partition is None:
            self._cache.clear()
            self._where.clear()
            return
        for ck in [ck for ck in self._cache if ck[0] == partition]:
            del self._cache[ck]
        for key in [k for k, p in self._where.items() if p == partition]:
            del self._where[key]

    def _owned(self, key: BucketKey) -> tuple[int, Any] | None:
        """The partition and open database of ``key``, if this worker owns it now.

        Readers by key (the rolling view, expiry) must not go through
        ``_db_for_partition``: it would reopen the database of a partition
        revoked a moment ago and read (then publish) another worker's past.
        """
        partition = self._where.get(key)
        if partition is None:
            return None
        db = _dbs(self._table).get(partition)
        return (partition, db) if db is not None else None

    def load(self, partition: int, key: BucketKey) -> BucketRecord | None:
        db = self._db(partition)
        ck = (partition, key)
        rec = self._cache.get(ck)
        if rec is not None:
            self._cache.move_to_end(ck)
            return rec
        raw = db.get(encode_bucket_key(key))
        if raw is None:
            return None
        rec = BucketRecord.from_bytes(raw)
        self._remember(ck, rec)
        return rec

    def save(self, partition: int, changed: Mapping[BucketKey, BucketRecord]) -> None:
        db = self._db(partition)
        wb = WriteBatch(raw_mode=True)
        sends = []
        for key, rec in changed.items():
            raw_key = encode_bucket_key(key)
            raw = rec.to_bytes()
            wb.put(raw_key, raw)
            sends.append((raw_key, raw))
            self._remember((partition, key), rec)
            self._where[key] = partition
        db.write(wb)
        for raw_key, raw in sends:
            self._table.send_changelog(
                partition, raw_key, raw, key_serializer="raw", value_serializer="raw"
            )

    def _remember(self, ck: tuple[int, BucketKey], rec: BucketRecord) -> None:
        self._cache[ck] = rec
        self._cache.move_to_end(ck)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------ readers by key

    def keys(self) -> Iterator[BucketKey]:
        """Every key in the assigned partitions (and where it lives)."""
        self._where.clear()
        for partition, db in list(_dbs(self._table).items()):
            for raw_key in db.keys(from_key=b""):
                if raw_key.startswith(_FAUST_KEYS):
                    continue
                key = decode_bucket_key(raw_key)
                self._where[key] = partition
                yield key

    def bucket(self, key: BucketKey) -> HourBucket | None:
        if self._owned(key) is None:
            return None
        rec = self.load(self._where[key], key)
        return rec.bucket if rec is not None else None

    def drop(self, key: BucketKey) -> None:
        """Delete an expired bucket and tombstone it in every partition it counted from."""
        owned = self._owned(key)
        if owned is None:
            return
        partition, db = owned
        del self._where[key]
        raw_key = encode_bucket_key(key)
        raw = db.get(raw_key)
        self._cache.pop((partition, key), None)
        if raw is None:
            return
        db.delete(raw_key)
        for p in BucketRecord.from_bytes(raw).applied or {partition: -1}:
            self._table.send_changelog(
                p, raw_key, None, key_serializer="raw", value_serializer="raw"
            )
