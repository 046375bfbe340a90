"""Which message first carried each event_id: blocks in the table, an index in memory.

Rule 2 of docs/architecture.md: a different message with the same id within
an hour is a duplicate. Writing one ``seen`` record per event cost one
changelog message per event, most of the worker's time. Now one *block* per
partition per folded run holds the ids that run saw for the first time (or
replayed), and the worker keeps an in-memory index of every block of the
partitions it holds, rebuilt from the table whenever the assignment changes
(after Faust restored the table from its changelog).

The index holds an hour of ids: millions on a busy worker. As a dict of
Python objects it took ~260 bytes an id (4.5 GB for 5,000 events/s); here it
is sorted runs of 40-byte rows, looked up a column at a time by binary
search, and merged as they grow, like the levels of an LSM tree.

Pure: the table is any mapping of block key to block bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLOCK_ENTRIES",
    "BLOCK_PREFIX",
    "ROW",
    "Lookup",
    "Seen",
    "SeenIds",
    "block_key",
    "block_rows",
    "decode_block",
    "encode_block",
    "encode_rows",
    "id_halves",
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
#: A block entry as numpy sees it (the same 40 packed bytes as ``_ENTRY``).
_BLOCK_ROW = np.dtype(
    [
        ("id", "V16"),
        ("partition", "<i4"),
        ("offset", "<i8"),
        ("line", "<i4"),
        ("first_seen", "<f8"),
    ]
)
#: A row of the index: the id as two big-endian halves (sortable integers).
ROW = np.dtype(
    [
        ("hi", "<u8"),
        ("lo", "<u8"),
        ("partition", "<i4"),
        ("offset", "<i8"),
        ("line", "<i4"),
        ("first_seen", "<f8"),
    ]
)
assert _BLOCK_ROW.itemsize == _ENTRY.size == ROW.itemsize
#: A new run merges into the last while it is at least 1/_MERGE_AT of its size.
#: 1 makes the runs' sizes the binary digits of the ids held: each id is copied
#: about log2(ids / run) times. 2 (merging at half the size) copied each one
#: more often, for fewer runs to look in: 0.36 against 0.34 us an id with a
#: million ids, 0.81 against 0.67 with eight million.
_MERGE_AT = 1
#: What a lookup answers of each id's row.
_WHERE = ("partition", "offset", "line", "first_seen")


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


def id_halves(ids: bytes) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """16-byte ids, concatenated, as (high, low) 64-bit halves."""
    pairs = np.frombuffer(ids, dtype=">u8").reshape(-1, 2)
    return pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)


def block_rows(raw: bytes) -> npt.NDArray[np.void]:
    """A block's entries as index rows (``ROW``), without a Python object per entry."""
    block_newest(raw)  # checks the format
    entries = np.frombuffer(raw, dtype=_BLOCK_ROW, offset=_HEAD.size)
    rows = np.empty(len(entries), dtype=ROW)
    rows["hi"], rows["lo"] = id_halves(entries["id"].tobytes())
    for name in ("partition", "offset", "line", "first_seen"):
        rows[name] = entries[name]
    return rows


def encode_rows(rows: npt.NDArray[np.void]) -> bytes:
    """Index rows as a block (the bytes ``encode_block`` writes for the same entries)."""
    entries = np.empty(len(rows), dtype=_BLOCK_ROW)
    pairs = np.empty((len(rows), 2), dtype=">u8")
    pairs[:, 0], pairs[:, 1] = rows["hi"], rows["lo"]
    entries["id"] = np.frombuffer(pairs.tobytes(), dtype="V16")
    for name in ("partition", "offset", "line", "first_seen"):
        entries[name] = rows[name]
    newest = float(rows["first_seen"].max()) if len(rows) else 0.0
    return _HEAD.pack(_FORMAT, newest) + entries.tobytes()


def decode_block(raw: bytes) -> list[tuple[bytes, Seen]]:
    block_newest(raw)  # checks the format
    return [
        (eid, Seen(p, o, line, t)) for eid, p, o, line, t in _ENTRY.iter_unpack(raw[_HEAD.size :])
    ]


class Lookup(NamedTuple):
    """Where each of a column of ids was seen, if it was (columns, one row per id)."""

    found: npt.NDArray[np.bool_]
    partition: npt.NDArray[np.int32]
    offset: npt.NDArray[np.int64]
    line: npt.NDArray[np.int32]
    first_seen: npt.NDArray[np.float64]


class SeenIds:
    """event_id -> ``Seen``, over the blocks of the partitions a worker holds.

    Sorted runs of ``ROW``, each with one row per id (its newest sighting);
    a new run merges into the one before while it is at least as large
    (``_MERGE_AT``), so there are at most about log2(ids / run) runs. An id
    may be in several runs: the newest sighting (``first_seen``, then the
    later run) wins.
    """

    __slots__ = ("_his", "_runs")

    def __init__(self, blocks: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._runs: list[npt.NDArray[np.void]] = []
        #: each run's ``hi`` column, contiguous: a binary search over the
        #: strided field would copy the whole column first, at every lookup
        self._his: list[npt.NDArray[np.uint64]] = []
        rows = [block_rows(raw) for key, raw in blocks if block_partition(key) is not None]
        if rows:
            self.add_rows(np.concatenate(rows))

    def __len__(self) -> int:
        """Rows held (an id re-sighted after a merge is counted once per run holding it)."""
        return sum(len(r) for r in self._runs)

    def lookup(self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> Lookup:
        """The newest sighting of each id (``hi``/``lo`` halves), a column at a time.

        The ids are looked up in sorted order (and the answers put back in
        the order given): a binary search for sorted keys walks a run once,
        six times faster than random keys over a run of a million rows.
        """
        n = len(hi)
        order = np.argsort(hi)
        hi, lo = hi[order], lo[order]
        found = np.zeros(n, dtype=bool)
        out = {name: np.zeros(n, dtype=ROW[name]) for name in _WHERE}
        for run, run_hi in zip(self._runs, self._his, strict=True):  # oldest first: later wins
            pos = np.searchsorted(run_hi, hi)
            for _ in range(4):
                at = np.minimum(pos, len(run) - 1)
                # Most ids are new: compare the high halves first, and copy
                # out only the rows that match one.
                hit = np.flatnonzero((pos < len(run)) & (np.take(run_hi, at) == hi))
                if not len(hit):
                    break
                row = np.take(run, at[hit])  # ``run[at]`` copies structured rows ~10x slower
                exact = row["lo"] == lo[hit]
                newer = exact & (~found[hit] | (row["first_seen"] >= out["first_seen"][hit]))
                for name, column in out.items():
                    column[hit[newer]] = row[name][newer]
                found[hit[exact]] = True
                # Another id with the same high half (1 in 2^64 per pair):
                # look at the next row for the ids not matched yet.
                again = hit[~exact]
                if not len(again):
                    break
                pos = np.full(n, len(run))
                pos[again] = at[again] + 1
            else:
                self._lookup_slowly(run, hi, lo, found, out)
        given = np.empty(n, dtype=np.intp)
        given[order] = np.arange(n)
        return Lookup(found[given], *(out[name][given] for name in _WHERE))

    @staticmethod
    def _lookup_slowly(
        run: npt.NDArray[np.void],
        hi: npt.NDArray[np.uint64],
        lo: npt.NDArray[np.uint64],
        found: npt.NDArray[np.bool_],
        out: dict[str, npt.NDArray[Any]],
    ) -> None:
        for k in range(len(hi)):
            left = int(np.searchsorted(run["hi"], hi[k], "left"))
            right = int(np.searchsorted(run["hi"], hi[k], "right"))
            for j in range(left, right):
                if run["lo"][j] == lo[k] and (
                    not found[k] or run["first_seen"][j] >= out["first_seen"][k]
                ):
                    for name, column in out.items():
                        column[k] = run[name][j]
                    found[k] = True

    def add_rows(self, rows: npt.NDArray[np.void]) -> None:
        """Record sightings (newer than, or as new as, anything held for their ids)."""
        if len(rows):
            runs, his = self._runs, self._his
            run = _newest_each(rows)
            run_hi = np.ascontiguousarray(run["hi"])
            while runs and _MERGE_AT * len(run) >= len(runs[-1]):
                run, run_hi = _merge_runs(runs.pop(), his.pop(), run, run_hi)
            runs.append(run)
            his.append(run_hi)

    def expire(self, cutoff: float) -> None:
        """Drop sightings older than ``cutoff``: outside the dedup window, they decide nothing."""
        kept = [np.compress(r["first_seen"] >= cutoff, r) for r in self._runs]
        self._runs = [r for r in kept if len(r)]
        self._his = [np.ascontiguousarray(r["hi"]) for r in self._runs]

    # -- one id at a time (tests, tools) ------------------------------------

    def get(self, event_id: bytes) -> Seen | None:
        hi, lo = id_halves(event_id)
        found = self.lookup(hi, lo)
        if not found.found[0]:
            return None
        return Seen(
            int(found.partition[0]),
            int(found.offset[0]),
            int(found.line[0]),
            float(found.first_seen[0]),
        )

    def __setitem__(self, event_id: bytes, seen: tuple[int, int, int, float]) -> None:
        self.add([(event_id, seen)])

    def add(self, entries: Iterable[tuple[bytes, tuple[int, int, int, float]]]) -> None:
        items = list(entries)
        rows = np.empty(len(items), dtype=ROW)
        rows["hi"], rows["lo"] = id_halves(b"".join(eid for eid, _ in items))
        for i, name in enumerate(("partition", "offset", "line", "first_seen")):
            rows[name] = [s[i] for _, s in items]
        self.add_rows(rows)


def _merge_runs(
    older: npt.NDArray[np.void],
    older_hi: npt.NDArray[np.uint64],
    newer: npt.NDArray[np.void],
    newer_hi: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.void], npt.NDArray[np.uint64]]:
    """``_newest_each`` of two runs, older then newer, and its ``hi`` column.

    When no high half is in both runs (ids are random: the usual case), no
    id is either, and the result is the two runs interleaved: a stable sort
    of the two ``hi`` columns end to end (timsort finds the two sorted runs
    and merges them in one linear pass), then one gather of the rows with
    ``np.take`` (indexing structured rows directly copies them ~10x slower).
    Otherwise the general path sorts them together.
    """
    both_hi = np.concatenate([older_hi, newer_hi])
    order = np.argsort(both_hi, kind="stable")
    merged_hi = np.take(both_hi, order)
    if (merged_hi[1:] == merged_hi[:-1]).any():
        merged = _newest_each(np.concatenate([older, newer]))
        return merged, np.ascontiguousarray(merged["hi"])
    return np.take(np.concatenate([older, newer]), order), merged_hi


def _newest_each(rows: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    """``rows`` sorted by id, one per id: the newest ``first_seen``, then the last given.

    One stable sort by the high half does nearly all of it (ids are random:
    high halves rarely repeat, and timsort merges runs already sorted in
    one pass). Only the rows that share a high half with another (the same
    id seen again, or 1 in 2^64 a different id) are sorted further, among
    themselves, by (low half, ``first_seen``, the order given).
    """
    order = np.argsort(rows["hi"], kind="stable")
    ranked = np.take(rows, order)  # ``rows[order]`` copies structured rows ~10x slower
    hi = ranked["hi"]
    tied = hi[1:] == hi[:-1]
    if tied.any():
        at = np.flatnonzero(tied)
        involved = np.zeros(len(ranked), dtype=bool)
        involved[at] = True
        involved[at + 1] = True
        # Positions of those rows, in (hi, given order): sorting them by
        # (hi, lo, first_seen, position) moves each row only within its group.
        sub = np.flatnonzero(involved)
        part = ranked[sub]
        ranked[sub] = part[np.lexsort((sub, part["first_seen"], part["lo"], part["hi"]))]
    last = np.ones(len(ranked), dtype=bool)
    last[:-1] = (ranked["hi"][1:] != ranked["hi"][:-1]) | (ranked["lo"][1:] != ranked["lo"][:-1])
    return np.compress(last, ranked)
