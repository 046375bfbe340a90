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
#: Events validated and grouped at a time (see ``_fold_chunk``).
CHUNK_LINES = 10_000
#: Decoded bucket records a run holds before writing them back early.
LOADED_MAX = 8_000


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
    loaded: dict[tuple[str, str, int], BucketRecord] = {}
    for chunk in _chunks(records, CHUNK_LINES):
        _fold_chunk(
            chunk,
            buckets,
            seen_blocks,
            seen,
            cache,
            loaded,
            out,
            now=now,
            now_s=now_s,
            replay_below=replay_below,
        )
        if len(loaded) > LOADED_MAX:
            # A run that touches more buckets than memory should hold (a
            # week-wide catch-up over thousands of keys): write them now.
            _write_back(out, buckets, release=True)
            loaded.clear()
    _write_back(out, buckets, release=False)
    return out


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


def _write_back(out: FoldStats, buckets: MutableMapping[bytes, bytes], *, release: bool) -> None:
    """Write every touched record still held; with ``release``, stop holding them.

    The records are encoded together (``BucketRecord.encode_many``), then
    written one by one.
    """
    for table in (out.rewritten, out.changed):
        held = [(key, rec) for key, rec in table.items() if rec is not None]
        values = BucketRecord.encode_many([rec for _, rec in held])
        for (key, _), value in zip(held, values, strict=True):
            buckets[encode_bucket_key(key)] = value
            if release:
                table[key] = None


def _chunks(records: Sequence[Record], max_lines: int) -> Iterator[Sequence[Record]]:
    """Whole records, at most about ``max_lines`` events a chunk (one record at least)."""
    start, lines = 0, 0
    for i, record in enumerate(records):
        n = record.value.count(b"\n") + 1 if record.value else 0
        if lines and lines + n > max_lines:
            yield records[start:i]
            start, lines = i, 0
        lines += n
    yield records[start:]


def _fold_chunk(
    records: Sequence[Record],
    buckets: MutableMapping[bytes, bytes],
    seen_blocks: MutableMapping[bytes, bytes],
    seen: SeenIds,
    cache: MutableMapping[BucketKey, BucketRecord],
    loaded: dict[tuple[str, str, int], BucketRecord],
    out: FoldStats,
    *,
    now: datetime,
    now_s: float,
    replay_below: int,
) -> None:
    """Fold whole records into ``loaded`` (written back by the caller) and write their seen blocks.

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
    groups: dict[tuple[str, str, int], npt.NDArray[np.intp]] = {}
    newest: dict[tuple[str, str, int], int] = {}
    for key, members in _groups(cols.model, cols.provider, hours, keep):
        rec = loaded.get(key)
        if rec is None:
            bkey = BucketKey(*key)
            rec = cache.get(bkey)
            if rec is None:
                raw = buckets.get(encode_bucket_key(bkey))
                rec = BucketRecord(HourBucket()) if raw is None else BucketRecord.from_bytes(raw)
                cache[bkey] = rec
            loaded[key] = rec
        applied = rec.applied.get(partition, -1)
        if off[members[0]] <= applied:
            # Already folded (offsets rise along ``members``, so these are a
            # prefix). Write the record (and the seen entries) again anyway:
            # after a SIGKILL the local store can hold folds whose changelog
            # messages never left, and a replay is the one moment we know it
            # (rule 7). Without the rewrite, the next owner of this
            # partition would restore the older record and miss them.
            unseen = members[off[members] > applied]
            out.replayed += len(members) - len(unseen)
            out.rewritten[BucketKey(*key)] = rec
            if not len(unseen):
                continue
            members = unseen
        groups[key] = members
        newest[key] = int(off[members[-1]])
    if groups:
        inputs = BucketInputs.from_values(
            cols.status,
            cols.error_type,
            cols.ttft_ms,
            cols.latency_ms,
            cols.input_tokens,
            cols.output_tokens,
        )
        keys = list(groups)
        index = np.concatenate([groups[k] for k in keys])
        group = np.repeat(np.arange(len(keys), dtype=np.intp), [len(groups[k]) for k in keys])
        HourBucket.add_groups([loaded[k].bucket for k in keys], group, inputs.take(index))
        for key in keys:
            rec = loaded[key]
            rec.applied[partition] = newest[key]
            out.counted += len(groups[key])
            out.changed[BucketKey(*key)] = rec


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
    seen.add_rows(rows[new[kept]])
    return keep, rows


def _groups(
    models: list[str],
    providers: list[str],
    hours: npt.NDArray[np.int64],
    keep: npt.NDArray[np.bool_],
) -> Iterator[tuple[tuple[str, str, int], npt.NDArray[np.intp]]]:
    """The kept events by (model, provider, hour): each key once, with its events in order.

    Keys come in the order of their first event. Strings are turned into
    codes with one dict lookup each (C-level ``map``), the rest is numpy.
    """
    kept = np.flatnonzero(keep)
    if not len(kept):
        return
    model_code = {m: i for i, m in enumerate(dict.fromkeys(models))}
    provider_code = {p: i for i, p in enumerate(dict.fromkeys(providers))}
    n = len(models)
    mc = np.fromiter(map(model_code.__getitem__, models), np.int64, n)[kept]
    pc = np.fromiter(map(provider_code.__getitem__, providers), np.int64, n)[kept]
    h = hours[kept]
    span = int(h.max() - h.min()) + 1
    combined = (mc * len(provider_code) + pc) * span + (h - h.min())
    order = np.argsort(combined, kind="stable")
    ranked = combined[order]
    bounds = np.flatnonzero(np.diff(ranked)) + 1
    members = np.split(kept[order], bounds)
    for group in sorted(members, key=lambda g: int(g[0])):
        k = int(group[0])
        yield (models[k], providers[k], int(hours[k])), group


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
