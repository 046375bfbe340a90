"""Fold a batch of messages into bucket records: the worker's logic, free of Faust.

``fold_partition`` takes the messages of one partition in offset order and two
stores (bucket records and seen event_ids, anything with ``get`` and
``__setitem__``), and returns which buckets changed. The Faust agent calls it
once per partition per batch; tests call it with dicts.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from processors.aggregate import BucketKey, HourBucket, hour_of, in_window
from processors.worker.records import BucketRecord, SeenRecord, encode_bucket_key
from schemas.event import RequestEvent

__all__ = ["DEDUP_WINDOW_S", "FoldStats", "Message", "fold_partition"]

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
    #: Records written back unchanged because a replay touched them.
    rewritten: dict[BucketKey, BucketRecord] = field(default_factory=dict)


def fold_partition(
    messages: Sequence[Message],
    buckets: MutableMapping[bytes, bytes],
    seen: MutableMapping[bytes, bytes],
    *,
    now: datetime,
    now_s: float,
) -> FoldStats:
    """Count each event once. Changed records are written back once per batch."""
    out = FoldStats()
    records: dict[BucketKey, BucketRecord] = {}
    for msg in messages:
        ev = msg.event
        hour = hour_of(ev.ts)
        if not in_window(hour, now):
            out.outside_window += 1
            continue
        id_key = ev.event_id.bytes
        prior_raw = seen.get(id_key)
        if prior_raw is not None:
            prior = SeenRecord.from_bytes(prior_raw)
            fresh = now_s - prior.first_seen <= DEDUP_WINDOW_S
            if fresh and (prior.partition, prior.offset) != (msg.partition, msg.offset):
                out.duplicates += 1
                continue
        if prior_raw is None or not fresh:
            seen[id_key] = SeenRecord(msg.partition, msg.offset, now_s).to_bytes()
        key = BucketKey(ev.model, ev.provider, hour)
        rec = records.get(key)
        if rec is None:
            raw = buckets.get(encode_bucket_key(key))
            rec = BucketRecord.from_bytes(raw) if raw is not None else BucketRecord(HourBucket())
            records[key] = rec
        if msg.offset <= rec.applied.get(msg.partition, -1):
            # Already folded. Write the record (and the seen entry) again
            # anyway: after a SIGKILL the local store can hold folds whose
            # changelog messages never left, and a replay is the one moment
            # we know it. Without the rewrite, the next owner of this
            # partition would restore the older record and miss them.
            out.replayed += 1
            out.rewritten[key] = rec
            if prior_raw is not None and fresh:
                seen[id_key] = prior_raw
            continue
        rec.bucket.add(ev)
        rec.applied[msg.partition] = msg.offset
        out.counted += 1
        out.changed[key] = rec
    for key, rec in {**out.rewritten, **out.changed}.items():
        buckets[encode_bucket_key(key)] = rec.to_bytes()
    return out
