"""Table keys and values of the Faust worker, as bytes.

A bucket record is the hour bucket plus, per source partition, the highest
offset folded into it. Events reach a bucket from a partition in offset order
(the topic is keyed by model; the map only matters if partitions are ever
added), so after a crash an event at or below its partition's ``applied``
offset is already in the bucket and is skipped. The bucket and its marker travel in one
changelog message, so they can never disagree. That is what makes
at-least-once delivery count exactly once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from processors.aggregate import BucketKey, HourBucket

__all__ = [
    "BLOCK_PREFIX",
    "ID_PREFIX",
    "MAX_BLOCK_IDS",
    "BucketRecord",
    "SeenBlock",
    "SeenRecord",
    "decode_bucket_key",
    "encode_bucket_key",
    "id_key",
]

_SEP = b"\x00"
_HOUR = struct.Struct(">q")
_COUNT = struct.Struct("<H")
_APPLIED = struct.Struct("<iq")
_SEEN = struct.Struct("<iqd")  # partition, offset, first seen (unix seconds)
_BLOCK_KEY = struct.Struct(">iq")  # big-endian: blocks sort by partition, then offset
_BLOCK_HEAD = struct.Struct("<dI")  # first seen, number of ids

#: Key prefixes in the ``seen`` store. Blocks (``B``) are what the changelog
#: carries: one per partition per batch. Per-event entries (``I``) are the
#: local lookup index derived from them, never sent anywhere.
BLOCK_PREFIX = b"B"
ID_PREFIX = b"I"
#: Ids per block: 8,192 x 24 bytes stays well under Kafka's 1 MB message limit.
MAX_BLOCK_IDS = 8_192


def encode_bucket_key(key: BucketKey) -> bytes:
    return key.model.encode() + _SEP + key.provider.encode() + _SEP + _HOUR.pack(key.hour)


def decode_bucket_key(raw: bytes) -> BucketKey:
    hour = raw[-8:]
    model_b, provider_b = raw[:-9].split(_SEP, 1)
    return BucketKey(model_b.decode(), provider_b.decode(), _HOUR.unpack(hour)[0])


@dataclass(slots=True)
class BucketRecord:
    bucket: HourBucket
    applied: dict[int, int] = field(default_factory=dict)  # partition -> highest offset

    def to_bytes(self) -> bytes:
        head = _COUNT.pack(len(self.applied)) + b"".join(
            _APPLIED.pack(p, o) for p, o in sorted(self.applied.items())
        )
        return head + self.bucket.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> BucketRecord:
        (n,) = _COUNT.unpack_from(raw, 0)
        pos = _COUNT.size
        applied = {}
        for _ in range(n):
            p, o = _APPLIED.unpack_from(raw, pos)
            applied[p] = o
            pos += _APPLIED.size
        return cls(HourBucket.from_bytes(raw[pos:]), applied)


@dataclass(frozen=True, slots=True)
class SeenRecord:
    """Where an event_id was first seen: the message that may count it."""

    partition: int
    offset: int
    first_seen: float

    def to_bytes(self) -> bytes:
        return _SEEN.pack(self.partition, self.offset, self.first_seen)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SeenRecord:
        return cls(*_SEEN.unpack(raw))


def id_key(event_id: bytes) -> bytes:
    """The local index key of one event_id (16 bytes)."""
    return ID_PREFIX + event_id


@dataclass(frozen=True, slots=True)
class SeenBlock:
    """The event_ids one batch of one partition counted first, at what offsets.

    One changelog message per batch instead of one per event: the per-event
    ``SeenRecord`` entries are rebuilt from blocks wherever the table is
    restored (see ``processors.worker.state.SeenTable``).
    """

    partition: int
    first_seen: float
    ids: tuple[bytes, ...]
    offsets: tuple[int, ...]

    @property
    def key(self) -> bytes:
        return BLOCK_PREFIX + _BLOCK_KEY.pack(self.partition, self.offsets[0])

    def to_bytes(self) -> bytes:
        head = _BLOCK_HEAD.pack(self.first_seen, len(self.ids))
        return head + b"".join(self.ids) + struct.pack(f"<{len(self.offsets)}q", *self.offsets)

    @classmethod
    def from_bytes(cls, key: bytes, raw: bytes) -> SeenBlock:
        partition, _ = _BLOCK_KEY.unpack_from(key, len(BLOCK_PREFIX))
        first_seen, n = _BLOCK_HEAD.unpack_from(raw, 0)
        pos = _BLOCK_HEAD.size
        ids = tuple(raw[pos + 16 * i : pos + 16 * (i + 1)] for i in range(n))
        offsets = struct.unpack_from(f"<{n}q", raw, pos + 16 * n)
        return cls(partition, first_seen, ids, offsets)

    @staticmethod
    def first_seen_of(raw: bytes) -> float:
        """The block's time without decoding its ids (the sweep reads only this)."""
        first_seen: float = _BLOCK_HEAD.unpack_from(raw, 0)[0]
        return first_seen

    def entries(self) -> list[tuple[bytes, bytes]]:
        """The local index entries this block stands for: (id key, SeenRecord bytes)."""
        return [
            (id_key(i), _SEEN.pack(self.partition, o, self.first_seen))
            for i, o in zip(self.ids, self.offsets, strict=True)
        ]
