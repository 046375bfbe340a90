"""Fold a batch of messages into bucket records: the worker's logic, free of Faust.

``fold_partition`` takes the messages of one partition in offset order and two
stores, and returns which buckets changed. The stores are small protocols so
that the Faust agent can put a decoded-record cache and a batched seen index
behind them (``processors.worker.state``) while tests and benchmarks use the
dict versions below. Everything that decides what counts lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from processors.aggregate import BucketKey, HourBucket, hour_of, in_window
from processors.worker.records import BucketRecord, SeenRecord, encode_bucket_key
from schemas.event import RequestEvent

__all__ = [
    "DEDUP_WINDOW_S",
    "BucketStore",
    "DictBuckets",
    "DictSeen",
    "FoldStats",
    "Message",
    "SeenIndex",
    "fold_partition",
]

#: The same event delivered again within this many seconds counts once (PRODUCT.md).
DEDUP_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Message:
    partition: int
    offset: int
    event: RequestEvent


@dataclass(slots=True)
class FoldStats:
    counted: int = 0
    duplicates: int = 0
    replayed: int = 0  # already in the bucket (redelivery after a crash)
    outside_window: int = 0
    changed: dict[BucketKey, BucketRecord] = field(default_factory=dict)


class SeenIndex(Protocol):
    """Where each event_id was first counted, for the dedup hour."""

    def lookup(self, partition: int, ids: Sequence[bytes]) -> Sequence[bytes | None]:
        """``SeenRecord`` bytes per id (16-byte event_id), or None: one call per batch."""
        ...

    def remember(
        self, partition: int, ids: Sequence[bytes], offsets: Sequence[int], now_s: float
    ) -> None:
        """The ids this batch counts first, at these offsets of ``partition``."""
        ...


class BucketStore(Protocol):
    """Bucket records by key. ``load`` may hand out a cached record: fold mutates it
    and then passes it to ``save`` in the same call, so a cache stays current."""

    def load(self, partition: int, key: BucketKey) -> BucketRecord | None: ...

    def save(self, partition: int, changed: Mapping[BucketKey, BucketRecord]) -> None: ...


class DictSeen(dict[bytes, bytes]):
    """A plain dict of event_id -> ``SeenRecord`` bytes (tests, benchmarks)."""

    def lookup(self, partition: int, ids: Sequence[bytes]) -> list[bytes | None]:
        return [self.get(i) for i in ids]

    def remember(
        self, partition: int, ids: Sequence[bytes], offsets: Sequence[int], now_s: float
    ) -> None:
        for i, o in zip(ids, offsets, strict=True):
            self[i] = SeenRecord(partition, o, now_s).to_bytes()


class DictBuckets(dict[bytes, bytes]):
    """A plain dict of encoded key -> ``BucketRecord`` bytes; decodes on every load,
    so a test that restores a copy of it simulates a lost write exactly."""

    def load(self, partition: int, key: BucketKey) -> BucketRecord | None:
        raw = self.get(encode_bucket_key(key))
        return BucketRecord.from_bytes(raw) if raw is not None else None

    def save(self, partition: int, changed: Mapping[BucketKey, BucketRecord]) -> None:
        for key, rec in changed.items():
            self[encode_bucket_key(key)] = rec.to_bytes()


def fold_partition(
    messages: Sequence[Message],
    buckets: BucketStore,
    seen: SeenIndex,
    *,
    now: datetime,
    now_s: float,
) -> FoldStats:
    """Count each event once. Both stores are read once and written once per batch.

    Order of writes: the seen index first, then the buckets. A crash between
    them is harmless either way: a redelivered message that the seen index
    names as the first carrier of its id is not a duplicate, and the bucket's
    per-partition ``applied`` offset says whether it is already counted.
    """
    out = FoldStats()
    if not messages:
        return out
    partition = messages[0].partition
    inside: list[tuple[Message, int]] = []
    for msg in messages:
        hour = hour_of(msg.event.ts)
        if in_window(hour, now):
            inside.append((msg, hour))
        else:
            out.outside_window += 1
    ids = [msg.event.event_id.bytes for msg, _ in inside]
    priors = seen.lookup(partition, ids)

    first_here: dict[bytes, int] = {}  # id -> offset that carries it in this batch
    new_ids: list[bytes] = []
    new_offsets: list[int] = []
    records: dict[BucketKey, BucketRecord | None] = {}
    for (msg, hour), id_, prior_raw in zip(inside, ids, priors, strict=True):
        carrier = first_here.get(id_)
        if carrier is not None:
            if carrier != msg.offset:
                out.duplicates += 1
                continue
        elif (
            prior_raw is not None
            and (prior := SeenRecord.from_bytes(prior_raw)).first_seen >= now_s - DEDUP_WINDOW_S
        ):
            if (prior.partition, prior.offset) != (partition, msg.offset):
                out.duplicates += 1
                continue
            first_here[id_] = msg.offset  # the original message, delivered again
        else:
            first_here[id_] = msg.offset
            new_ids.append(id_)
            new_offsets.append(msg.offset)
        ev = msg.event
        key = BucketKey(ev.model, ev.provider, hour)
        if key in records:
            rec = records[key]
        else:
            rec = records[key] = buckets.load(partition, key)
        if rec is None:
            rec = records[key] = BucketRecord(HourBucket())
        if msg.offset <= rec.applied.get(partition, -1):
            out.replayed += 1
            continue
        rec.bucket.add(ev)
        rec.applied[partition] = msg.offset
        out.counted += 1
        out.changed[key] = rec
    if new_ids:
        seen.remember(partition, new_ids, new_offsets, now_s)
    if out.changed:
        buckets.save(partition, out.changed)
    return out
