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

from processors.aggregate import BucketKey, HourBucket
from processors.aggregate.columns import BucketInputs
from processors.aggregate.window import window_start_hour
from processors.worker.records import BucketRecord, encode_bucket_key
from processors.worker.seen import BLOCK_ENTRIES, SeenIds, block_key, encode_block
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
    """Write every touched record still held; with ``release``, stop holding them."""
    for table in (out.rewritten, out.changed):
        for key, rec in table.items():
            if rec is not None:
                buckets[encode_bucket_key(key)] = rec.to_bytes()
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

    def place(index: list[int]) -> tuple[list[int], list[int]]:
        """(record offset, line in the record) of each line index, in one pass."""
        at = np.searchsorted(np.asarray(starts), np.asarray(index, dtype=np.intp), "right") - 1
        first = np.asarray(starts)[at]
        return np.asarray(offsets)[at].tolist(), (np.asarray(index) - first).tolist()

    for (offset, line), (_, why) in zip(
        zip(*place([i for i, _ in batch.rejects]), strict=True), batch.rejects, strict=True
    ):
        out.invalid.append((offset, line, why))
    event_offsets, event_lines = place(cols.index)
    first_hour = window_start_hour(now)
    hours = (np.asarray(cols.ts_ms, dtype=np.int64) // _HOUR_MS).tolist()
    # Keys are plain (model, provider, hour) tuples here: a BucketKey is a
    # named tuple, equal to and hashed like the plain one. The loop below is
    # the only per-event Python step of the fold, so it touches the index's
    # dict directly and leaves everything per bucket to the second pass.
    members_of: dict[tuple[str, str, int], list[int]] = {}
    entries: list[tuple[bytes, tuple[int, int, int, float]]] = []
    models, providers = cols.model, cols.provider
    seen_get, seen_set = seen.lookup, seen.record
    for k, (eid, offset, line, hour) in enumerate(
        zip(cols.event_id, event_offsets, event_lines, hours, strict=True)
    ):
        if hour < first_hour:
            out.outside_window += 1
            continue
        prior = seen_get(eid)
        # Plain tuples in the order of ``Seen`` (partition, offset, line,
        # first_seen): a named tuple costs a Python-level call per event.
        if prior is not None and now_s - prior[3] <= DEDUP_WINDOW_S:
            if prior[1] != offset or prior[2] != line or prior[0] != partition:
                # A copy of an event first seen elsewhere. In a record folded
                # before (a redelivery) it was already counted as a duplicate.
                if offset < replay_below:
                    out.replayed += 1
                else:
                    out.duplicates += 1
                continue
            mark = prior  # itself, again: rule 1 below decides
        else:
            mark = (partition, offset, line, now_s)
            seen_set(eid, mark)
        entries.append((eid, mark))
        key = (models[k], providers[k], hour)
        members = members_of.get(key)
        if members is None:
            members_of[key] = [k]
        else:
            members.append(k)
    groups: dict[tuple[str, str, int], list[int]] = {}
    newest: dict[tuple[str, str, int], int] = {}
    for key, members in members_of.items():
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
        if event_offsets[members[0]] <= applied:
            # Already folded (offsets rise along ``members``, so these are a
            # prefix). Write the record (and the seen entries) again anyway:
            # after a SIGKILL the local store can hold folds whose changelog
            # messages never left, and a replay is the one moment we know it
            # (rule 7). Without the rewrite, the next owner of this
            # partition would restore the older record and miss them.
            fresh = [m for m in members if event_offsets[m] > applied]
            out.replayed += len(members) - len(fresh)
            out.rewritten[BucketKey(*key)] = rec
            if not fresh:
                continue
            members = fresh
        groups[key] = members
        newest[key] = event_offsets[members[-1]]
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
        index = np.fromiter(
            (k for key in keys for k in groups[key]), np.intp, sum(map(len, groups.values()))
        )
        group = np.repeat(np.arange(len(keys), dtype=np.intp), [len(groups[k]) for k in keys])
        HourBucket.add_groups([loaded[k].bucket for k in keys], group, inputs.take(index))
        for key in keys:
            rec = loaded[key]
            rec.applied[partition] = newest[key]
            out.counted += len(groups[key])
            out.changed[BucketKey(*key)] = rec
    first, last = records[0].offset, records[-1].offset
    for part, lo in enumerate(range(0, len(entries), BLOCK_ENTRIES)):
        block = block_key(partition, first, last, part)
        seen_blocks[block] = encode_block(entries[lo : lo + BLOCK_ENTRIES])
        out.seen_blocks.append(block)
