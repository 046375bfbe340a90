"""Which message first carried each event_id: blocks in the table, an index in memory.

Rule 2 of docs/architecture.md: a different message with the same id within
an hour is a duplicate. Writing one ``seen`` record per event cost one
changelog message per event, most of the worker's time. Now one *block* per
partition per folded run holds the ids that run saw for the first time (or
replayed), and the worker keeps an in-memory index of every block of the
partitions it holds, rebuilt from the table whenever the assignment changes
(after Faust restored the table from its changelog).

Pure: the table is any mapping of block key to block bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import NamedTuple

__all__ = [
    "BLOCK_ENTRIES",
    "BLOCK_PREFIX",
    "Seen",
    "SeenIds",
    "block_key",
    "decode_block",
    "encode_block",
]

#: Block keys start with this byte; keys of the per-event format this
#: replaced are 16 bytes of event_id with no such prefix, and are swept.
BLOCK_PREFIX = b"\x01"
_KEY = struct.Struct(">iqqi")  # partition, first and last offset of the run, part
#: Entries per block: 40 bytes each, so a block stays well under the
#: producer's 1 MiB request size (a run of records can hold 10^5+ events).
BLOCK_ENTRIES = 16_000
_HEAD = struct.Struct("<Bd")  # format, newest first_seen in the block
_ENTRY = struct.Struct("<16siqid")  # event_id, partition, offset, line, first_seen
_FORMAT = 1


class Seen(NamedTuple):
    """Where an event_id was first seen: the one message line that may count it."""

    partition: int
    offset: int
    line: int
    first_seen: float  # unix seconds


def block_key(partition: int, first_offset: int, last_offset: int, part: int = 0) -> bytes:
    return BLOCK_PREFIX + _KEY.pack(partition, first_offset, last_offset, part)


def block_partition(key: bytes) -> int | None:
    """The partition a block key names, or None for a key that is not a block."""
    if len(key) != 1 + _KEY.size or not key.startswith(BLOCK_PREFIX):
        return None
    return int(_KEY.unpack_from(key, 1)[0])


def encode_block(entries: Iterable[tuple[bytes, tuple[int, int, int, float]]]) -> bytes:
    """A block of (event_id, (partition, offset, line, first_seen)) entries."""
    items = list(entries)
    newest = max((s[3] for _, s in items), default=0.0)
    pack = _ENTRY.pack
    return _HEAD.pack(_FORMAT, newest) + b"".join([pack(eid, *s) for eid, s in items])


def block_newest(raw: bytes) -> float:
    """The newest first_seen in a block, without decoding its entries."""
    fmt, newest = _HEAD.unpack_from(raw, 0)
    if fmt != _FORMAT:
        raise ValueError(f"unknown seen block format {fmt}")
    return float(newest)


def decode_block(raw: bytes) -> list[tuple[bytes, Seen]]:
    block_newest(raw)  # checks the format
    return [
        (eid, Seen(p, o, line, t)) for eid, p, o, line, t in _ENTRY.iter_unpack(raw[_HEAD.size :])
    ]


class SeenIds:
    """event_id -> ``Seen``, over the blocks of the partitions a worker holds."""

    __slots__ = ("_ids",)

    def __init__(self, blocks: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._ids: dict[bytes, tuple[int, int, int, float]] = {}
        for key, raw in blocks:
            if block_partition(key) is not None:
                self.add(decode_block(raw))

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def lookup(self) -> Callable[[bytes], tuple[int, int, int, float] | None]:
        """``get`` as the index dict's own bound method: no Python frame per event."""
        return self._ids.get

    @property
    def record(self) -> Callable[[bytes, tuple[int, int, int, float]], None]:
        """``__setitem__`` as the index dict's own bound method (see ``lookup``)."""
        return self._ids.__setitem__

    def get(self, event_id: bytes) -> tuple[int, int, int, float] | None:
        """(partition, offset, line, first_seen), a ``Seen`` or a plain tuple in that order."""
        return self._ids.get(event_id)

    def __setitem__(self, event_id: bytes, seen: tuple[int, int, int, float]) -> None:
        """Record a first sighting now (newer than anything held)."""
        self._ids[event_id] = seen

    def add(self, entries: Iterable[tuple[bytes, tuple[int, int, int, float]]]) -> None:
        ids = self._ids
        for eid, seen in entries:
            old = ids.get(eid)
            if old is None or old[3] <= seen[3]:
                ids[eid] = seen

    def forget(self, entries: Iterable[tuple[bytes, Seen]]) -> None:
        """Drop entries of an expired block (unless a newer block replaced them)."""
        ids = self._ids
        for eid, seen in entries:
            if ids.get(eid) == seen:
                del ids[eid]
