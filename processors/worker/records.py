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
from collections.abc import Sequence
from dataclasses import dataclass, field

from processors.aggregate import BucketKey, HourBucket

__all__ = [
    "NEXT_OFFSET_KEY",
    "BucketRecord",
    "decode_bucket_key",
    "decode_offset",
    "encode_bucket_key",
    "encode_offset",
]

_SEP = b"\x00"
_HOUR = struct.Struct(">q")
_COUNT = struct.Struct("<H")
_APPLIED = struct.Struct("<iq")
_OFFSET = struct.Struct("<q")

#: Key of one record per partition in the buckets table: the next source
#: offset this partition's state expects (see processors/worker/fence.py).
#: A model name is UTF-8, which never holds the byte 0xff, so no bucket key
#: can be equal to it.
NEXT_OFFSET_KEY = b"\xffnext-offset"


def encode_offset(offset: int) -> bytes:
    return _OFFSET.pack(offset)


def decode_offset(raw: bytes) -> int:
    return int(_OFFSET.unpack(raw)[0])


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
        return self._head() + self.bucket.to_bytes()

    @staticmethod
    def encode_many(records: Sequence[BucketRecord]) -> list[bytes]:
        """``to_bytes`` of each record; the buckets are encoded together (``encode_many``)."""
        bodies = HourBucket.encode_many([r.bucket for r in records])
        return [r._head() + body for r, body in zip(records, bodies, strict=True)]

    def _head(self) -> bytes:
        return _COUNT.pack(len(self.applied)) + b"".join(
            _APPLIED.pack(p, o) for p, o in sorted(self.applied.items())
        )

    @staticmethod
    def applied_of(raw: bytes) -> dict[int, int]:
        """The record's applied offsets, without decoding its sketches."""
        (n,) = _COUNT.unpack_from(raw, 0)
        return dict(_APPLIED.unpack_from(raw, _COUNT.size + i * _APPLIED.size) for i in range(n))

    @staticmethod
    def supersedes(new: bytes, old: bytes) -> bool:
        """Whether record ``new`` has folded at least everything ``old`` has.

        A partition's events reach a bucket in offset order, so a record is
        the bucket's events up to its applied offsets: the one that is at
        least as far on every partition is the later state.
        """
        ahead = BucketRecord.applied_of(new)
        return all(ahead.get(p, -1) >= o for p, o in BucketRecord.applied_of(old).items())

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
