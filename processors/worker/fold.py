"""Fold a run of Kafka records into bucket records, a batch at a time, free of Faust.

``fold_records`` takes the records of one partition in offset order (each
carrying one or more events, docs/record-format.md), the bucket store and the
``seen`` block store (anything with ``get`` and ``__setitem__``) with its
in-memory index, and returns what changed. The work is per batch, not per
event: one validation call over every line (``schemas.batch``), dedup with
dict lookups, a group-by on (model, provider, hour), and one columnar add per
touched bucket (``HourBucket.add_columns``); then one write per touched
bucket and one ``seen`` block for the run. The Faust agent calls it once per
partition per batch; tests call it with dicts.

An event is identified in the log by (partition, record offset, line). A
record is folded whole or not at all, so a bucket's applied offset (rule 1
of docs/architecture.md) still says, per partition, which records it holds.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from processors.aggregate import BucketKey, HourBucket
from processors.aggregate.columns import BucketInputs
from processors.aggregate.window import window_start_hour
from processors.worker.records import BucketRecord, encode_bucket_key
from processors.worker.seen import (
    BLOCK_ENTRIES,
    ROW,
    SeenIds,
    block_key,
    encode_rows,
    id_halves,
)
from schemas.batch import validate_lines
from schemas.errors import InvalidEvent
from schemas.event_record import UnreadableRecord, record_lines

__all__ = ["DEDUP_WINDOW_S", "FoldStats", "Record", "fold_records"]

#: The same event delivered again within this many seconds counts once
#: (docs/definitions.md, "Duplicates").
DEDUP_WINDOW_S = 3600.0
_HOUR_MS = 3_600_000
#: Hours after the window's first a bucket code has room for (``_RunBuckets.slots``):
#: far more than the window and the future tolerance of ``schemas.event``.
_HOUR_SPAN = 1 << 20
#: Bytes of records validated and grouped at a time (see ``_fold_chunk``):
#: about 11,000 events of the usual size.
CHUNK_BYTES = 4 * 1024 * 1024
#: Decoded bucket records a run holds before writing them back early.
LOADED_MAX = 8_000
#: Events whose adds a run holds before adding them to their buckets (about
#: 60 bytes each): see ``_RunBuckets``.
ADDS_MAX = 250_000


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record of the events topic, as delivered (or read again)."""

    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(slots=True)
class FoldStats:
    counted: int = 0
    duplicates: int = 0
    replayed: int = 0  # already in the bucket (redelivery after a crash)
    outside_window: int = 0
    #: (offset, line, why) of every line that is not a valid event.
    invalid: list[tuple[int, int, InvalidEvent | UnreadableRecord]] = field(default_factory=list)
    #: Records the run changed; None for one already written and no longer
    #: held (a run that touched more than ``LOADED_MAX`` buckets).
    changed: dict[BucketKey, BucketRecord | None] = field(default_factory=dict)
    #: Records written back unchanged because a replay touched them.
    rewritten: dict[BucketKey, BucketRecord | None] = field(default_factory=dict)
    #: The keys of the ``seen`` blocks written for this run.
    seen_blocks: list[bytes] = field(default_factory=list)


def fold_records(
    records: Sequence[Record],
    buckets: MutableMapping[bytes, bytes],
    seen_blocks: MutableMapping[bytes, bytes],
    seen: SeenIds,
    *,
    now: datetime,
    now_s: float,
    cache: MutableMapping[BucketKey, BucketRecord] | None = None,
    replay_below: int = 0,
) -> FoldStats:
    """Count each event once. Changed records are written back once per call.

    ``cache`` keeps decoded bucket records across calls, for a caller that is
    the only writer of these partitions' buckets while it holds them (the
    worker, within one generation): it must hold what ``buckets`` holds, so
    a caller whose call raised drops it.

    ``replay_below`` is the first offset of the partition never folded
    before: a copy of an event in an earlier record is a redelivery of a
    duplicate already counted, and counts as replayed, not again as a
    duplicate (the counters stay exact when Faust delivers a record twice).
    """
    if cache is None:
        cache = {}
    out = FoldStats()
    if not records:
        return out
    records = _once_each(records, out)
    run = _RunBuckets(records[0].partition, window_start_hour(now), buckets, cache)
    for chunk in _chunks(records, CHUNK_BYTES):
        _fold_chunk(
            chunk,
            seen_blocks,
            seen,
            run,
            out,
            now=now,
            now_s=now_s,
            replay_below=replay_below,
        )
        if len(run) > LOADED_MAX:
            # A run that touches more buckets than memory should hold (a
            # week-wide catch-up over thousands of keys): write them now.
            run.apply(out)
            _write_back(out, buckets, run.partition, release=True)
            run.forget()
        elif run.pending > ADDS_MAX:
            run.apply(out)
    run.apply(out)
    _write_back(out, buckets, run.partition, release=False)
    return out


class _RunBuckets:
    """The buckets a run touches, each at a slot, and the run's adds to them.

    A chunk of week-wide traffic spreads over thousands of buckets, a few
    events each, so anything done once per bucket per chunk in Python costs
    more than the events' own work. Here a bucket is found once per run
    (its record loaded, its applied offset read); each chunk maps its events
    to slots with numpy and one dict lookup per distinct bucket, checks
    rule 1 against the slots' applied offsets as a column, and only notes
    its kept events with their slots. ``apply`` adds everything noted in one
    ``HourBucket.add_groups`` and moves the records' applied offsets: a
    bucket's Python steps once per run. No record is written back before
    ``apply``, so the records written always match their applied offsets.
    """

    __slots__ = (
        "_applied",
        "_cache",
        "_changed",
        "_first_hour",
        "_groups",
        "_inputs",
        "_models",
        "_providers",
        "_slot_of",
        "_store",
        "keys",
        "partition",
        "pending",
        "recs",
    )

    def __init__(
        self,
        partition: int,
        first_hour: int,
        store: MutableMapping[bytes, bytes],
        cache: MutableMapping[BucketKey, BucketRecord],
    ) -> None:
        self.partition = partition
        self._first_hour = first_hour
        self._store = store
        self._cache = cache
        self._models: dict[str, int] = {}
        self._providers: dict[str, int] = {}
        self._slot_of: dict[int, int] = {}
        self.keys: list[BucketKey] = []
        self.recs: list[BucketRecord] = []
        #: per slot: the highest offset of this partition in the bucket, noted adds included
        self._applied = np.zeros(0, dtype=np.int64)
        self._changed = np.zeros(0, dtype=bool)
        self._groups: list[npt.NDArray[np.intp]] = []
        self._inputs: list[BucketInputs] = []
        #: events noted and not yet added
        self.pending = 0

    def __len__(self) -> int:
        return len(self.keys)

    def slots(
        self,
        models: list[str],
        providers: list[str],
        hours: npt.NDArray[np.int64],
        kept: npt.NDArray[np.intp],
    ) -> npt.NDArray[np.intp]:
        """The slot of each ``kept`` event's bucket (hours of the window only).

        A (model, provider, hour) is one int64 code; strings become codes
        with one dict lookup each (C-level ``map``), and each distinct code
        of the chunk is one dict lookup more.
        """
        for name in dict.fromkeys(models):
            self._models.setdefault(name, len(self._models))
        for name in dict.fromkeys(providers):
            self._providers.setdefault(name, len(self._providers))
        n = len(models)
        mc = np.fromiter(map(self._models.__getitem__, models), np.int64, n)[kept]
        pc = np.fromiter(map(self._providers.__getitem__, providers), np.int64, n)[kept]
        rel = hours[kept] - self._first_hour
        if len(rel) and not 0 <= int(rel.min()) <= int(rel.max()) < _HOUR_SPAN:
            raise ValueError(f"an hour outside the window was kept: {rel.min()}..{rel.max()}")
        codes = (mc << 40) | (pc << 20) | rel
        unique, first, of_code = np.unique(codes, return_index=True, return_inverse=True)
        found = list(map(self._slot_of.get, unique.tolist()))
        if None in found:
            new_keys: list[BucketKey] = []
            for j, slot in enumerate(found):
                if slot is None:
                    k = int(kept[first[j]])
                    found[j] = self._slot_of[int(unique[j])] = len(self.keys) + len(new_keys)
                    new_keys.append(BucketKey(models[k], providers[k], int(hours[k])))
            self._hold(new_keys)
        return np.asarray(found, dtype=np.intp)[of_code]

    def _hold(self, keys: list[BucketKey]) -> None:
        """Give ``keys`` the next slots: their records held decoded already, or read."""
        recs: list[BucketRecord] = []
        for key in keys:
            rec = self._cache.get(key)
            if rec is None:
                raw = self._store.get(encode_bucket_key(key))
                rec = BucketRecord(HourBucket()) if raw is None else BucketRecord.from_bytes(raw)
                self._cache[key] = rec
            recs.append(rec)
        self.keys += keys
        self.recs += recs
        applied = np.fromiter(
            (r.applied.get(self.partition, -1) for r in recs), np.int64, len(recs)
        )
        self._applied = np.concatenate([self._applied, applied])
        self._changed = np.concatenate([self._changed, np.zeros(len(keys), dtype=bool)])

    def applied(self, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
        """The applied offset (rule 1) of each slot, noted adds included."""
        return self._applied[slots]

    def note(
        self, slots: npt.NDArray[np.intp], offsets: npt.NDArray[np.int64], inputs: BucketInputs
    ) -> None:
        """Event ``i`` of ``inputs``, of record ``offsets[i]``, counts in bucket ``slots[i]``."""
        np.maximum.at(self._applied, slots, offsets)
        self._changed[slots] = True
        self._groups.append(slots)
        self._inputs.append(inputs)
        self.pending += len(slots)

    def apply(self, out: FoldStats) -> None:
        """Add every noted event to its bucket; the records changed join ``out.changed``."""
        if self.pending:
            HourBucket.add_groups(
                [r.bucket for r in self.recs],
                np.concatenate(self._groups),
                BucketInputs.concat(self._inputs),
            )
        self._groups, self._inputs, self.pending = [], [], 0
        changed = np.flatnonzero(self._changed)
        for j, last in zip(changed.tolist(), self._applied[changed].tolist(), strict=True):
            rec = self.recs[j]
            rec.applied[self.partition] = last
            out.changed[self.keys[j]] = rec
        self._changed[changed] = False

    def forget(self) -> None:
        """Stop holding the records (after ``apply`` and their write-back)."""
        self._slot_of.clear()
        self.keys, self.recs = [], []
        self._applied = np.zeros(0, dtype=np.int64)
        self._changed = np.zeros(0, dtype=bool)


def _once_each(records: Sequence[Record], out: FoldStats) -> Sequence[Record]:
    """The run with each offset once: the first of any record delivered twice.

    Faust can hand the agent the same record twice in one batch (fetched
    before and after the seek to the committed offsets that ends a
    recovery). A bucket's applied offset moves on only at the end of a run,
    so a second copy inside the run would pass rule 1 and count again; it
    is a redelivery, counted as replayed.
    """
    offsets = {r.offset for r in records}
    if len(offsets) == len(records):
        return records
    once: list[Record] = []
    for r in records:
        if r.offset in offsets:
            offsets.discard(r.offset)
            once.append(r)
        elif r.value:
            out.replayed += r.value.count(b"\n") + 1
    return once


@runtime_checkable
class WritesMany(Protocol):
    """A bucket store that takes a run's writes at once (the worker's table)."""

    def write_many(self, partition: int, items: Sequence[tuple[bytes, bytes]]) -> None: ...


def _write_back(
    out: FoldStats, buckets: MutableMapping[bytes, bytes], partition: int, *, release: bool
) -> None:
    """Write every touched record still held; with ``release``, stop holding them.

    The records are encoded together (``BucketRecord.encode_many``), then
    written in order: at once to a store that ``WritesMany``, one by one to
    any other.
    """
    for table in (out.rewritten, out.changed):
        held = [(key, rec) for key, rec in table.items() if rec is not None]
        if not held:
            continue
        values = BucketRecord.encode_many([rec for _, rec in held])
        raw_keys = [encode_bucket_key(key) for key, _ in held]
        items = list(zip(raw_keys, values, strict=True))
        if isinstance(buckets, WritesMany):
            buckets.write_many(partition, items)
        else:
            for raw_key, value in items:
                buckets[raw_key] = value
        if release:
            for key, _ in held:
                table[key] = None


def _chunks(records: Sequence[Record], max_bytes: int) -> Iterator[Sequence[Record]]:
    """Whole records, at most ``max_bytes`` of values a chunk (one record at least).

    Bounded by bytes rather than lines: a chunk's memory follows its bytes,
    and a value's length costs nothing to read (counting its newlines cost
    a pass over every byte of the run).
    """
    start, size = 0, 0
    for i, record in enumerate(records):
        n = len(record.value) if record.value else 0
        if size and size + n > max_bytes:
            yield records[start:i]
            start, size = i, 0
        size += n
    yield records[start:]


def _fold_chunk(
    records: Sequence[Record],
    seen_blocks: MutableMapping[bytes, bytes],
    seen: SeenIds,
    run: _RunBuckets,
    out: FoldStats,
    *,
    now: datetime,
    now_s: float,
    replay_below: int,
) -> None:
    """Fold whole records into ``run`` (applied and written back by the caller) and
    write their seen blocks.

    Validation holds a decoded dict per event, so a run is folded a chunk of
    records at a time: memory stays bounded whatever the run's size, and
    each touched bucket is still encoded once per run.
    """
    partition = records[0].partition
    lines: list[bytes] = []
    starts: list[int] = []  # where each record's lines start in ``lines``
    offsets: list[int] = []
    for record in records:
        try:
            rec_lines = record_lines(record.value, record.headers)
        except UnreadableRecord as exc:
            out.invalid.append((record.offset, 0, exc))
            continue
        starts.append(len(lines))
        offsets.append(record.offset)
        lines.extend(rec_lines)
    batch = validate_lines(lines, now=now)
    cols = batch.events

    record_starts = np.asarray(starts, dtype=np.int64)
    record_offsets = np.asarray(offsets, dtype=np.int64)

    def place(index: list[int]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(record offset, line in the record) of each line index, in one pass."""
        lines_at = np.asarray(index, dtype=np.int64)
        at = np.searchsorted(record_starts, lines_at, "right") - 1
        return record_offsets[at], lines_at - record_starts[at]

    bad_offsets, bad_lines = place([i for i, _ in batch.rejects])
    for offset, line, (_, why) in zip(
        bad_offsets.tolist(), bad_lines.tolist(), batch.rejects, strict=True
    ):
        out.invalid.append((offset, line, why))
    if not cols.index:
        return
    off, line = place(cols.index)
    hours = np.asarray(cols.ts_ms, dtype=np.int64) // _HOUR_MS
    keep, fresh = _first_sightings(
        cols.event_id,
        off,
        line,
        hours,
        partition,
        seen,
        out,
        first_hour=window_start_hour(now),
        now_s=now_s,
        replay_below=replay_below,
    )
    _write_seen(records, seen_blocks, fresh, out)
    kept = np.flatnonzero(keep)
    if not len(kept):
        return
    slots = run.slots(cols.model, cols.provider, hours, kept)
    at = off[kept]
    new = at > run.applied(slots)
    if not new.all():
        # Already folded (rule 1). Write the record (and the seen entries)
        # again anyway: after a SIGKILL the local store can hold folds whose
        # changelog messages never left, and a replay is the one moment we
        # know it (rule 7). Without the rewrite, the next owner of this
        # partition would restore the older record and miss them.
        out.replayed += int(len(new) - np.count_nonzero(new))
        for j in np.unique(slots[~new]).tolist():
            out.rewritten[run.keys[j]] = run.recs[j]
        kept, slots, at = kept[new], slots[new], at[new]
        if not len(kept):
            return
    out.counted += len(kept)
    inputs = BucketInputs.from_values(
        cols.status,
        cols.error_type,
        cols.ttft_ms,
        cols.latency_ms,
        cols.input_tokens,
        cols.output_tokens,
    )
    run.note(slots, at, inputs.take(kept))


def _first_sightings(
    event_ids: list[bytes],
    off: npt.NDArray[np.int64],
    line: npt.NDArray[np.int64],
    hours: npt.NDArray[np.int64],
    partition: int,
    seen: SeenIds,
    out: FoldStats,
    *,
    first_hour: int,
    now_s: float,
    replay_below: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.void]]:
    """Rule 2 for a chunk, a column at a time: which events may count, and their seen rows.

    Decides as if the events were taken one by one in log order, each new
    sighting recorded before the next is looked at: an event whose id was
    seen within the window in *another* message is a copy (a duplicate, or
    a replay if its record was folded before); one seen in this very
    message may count (rule 1 decides); an id not seen within the window
    counts at its first occurrence here, and its later occurrences are
    copies of it. Events of hours before the window are only counted as such.

    Returns the mask of events that may count and their rows for this run's
    ``seen`` block (a new sighting at ``now_s``, an old one as it was); the
    new sightings are added to the index.
    """
    inside = hours >= first_hour
    out.outside_window += int(len(hours) - np.count_nonzero(inside))
    hi, lo = id_halves(b"".join(event_ids))
    prior = seen.lookup(hi, lo)
    recent = prior.found & (now_s - prior.first_seen <= DEDUP_WINDOW_S)
    itself = (
        inside
        & recent
        & (prior.partition == partition)
        & (prior.offset == off)
        & (prior.line == line)
    )
    # The first occurrence in the chunk of each id (events of the window only).
    where = np.flatnonzero(inside)
    order = where[np.lexsort((where, lo[where], hi[where]))]
    starts = np.ones(len(order), dtype=bool)
    hi_sorted, lo_sorted = hi[order], lo[order]
    starts[1:] = (hi_sorted[1:] != hi_sorted[:-1]) | (lo_sorted[1:] != lo_sorted[:-1])
    first = np.zeros(len(hours), dtype=bool)
    first[order[starts]] = True
    new = inside & ~recent & first
    keep = itself | new
    copies = inside & ~keep
    replays = int(np.count_nonzero(copies & (off < replay_below)))
    out.replayed += replays
    out.duplicates += int(np.count_nonzero(copies)) - replays
    kept = np.flatnonzero(keep)
    rows = np.empty(len(kept), dtype=ROW)
    rows["hi"], rows["lo"] = hi[kept], lo[kept]
    rows["partition"] = partition
    rows["offset"], rows["line"] = off[kept], line[kept]
    rows["first_seen"] = np.where(itself[kept], prior.first_seen[kept], now_s)
    seen.add_rows(np.compress(new[kept], rows))
    return keep, rows


def _write_seen(
    records: Sequence[Record],
    seen_blocks: MutableMapping[bytes, bytes],
    rows: npt.NDArray[np.void],
    out: FoldStats,
) -> None:
    """This chunk's ``seen`` rows as blocks of at most ``BLOCK_ENTRIES``."""
    partition = records[0].partition
    first, last = records[0].offset, records[-1].offset
    for part, lo in enumerate(range(0, len(rows), BLOCK_ENTRIES)):
        block = block_key(partition, first, last, part)
        seen_blocks[block] = encode_rows(rows[lo : lo + BLOCK_ENTRIES])
        out.seen_blocks.append(block)
