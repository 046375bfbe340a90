"""NDJSON events into the embedded store: validate, keep rejects, dedupe, store, refresh.

Streams in bounded memory: lines are read in chunks, validated and written in
batches, so a 1 GB file costs one batch of memory, not a gigabyte.

Rejected lines are all counted, but only the first ``MAX_REJECTS_KEPT`` of a run
are stored in ``telemetry.rejected``: a file of millions of bad lines must not
cost millions of rows (the same rule as the HTTP door's, per file).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from processors.clickhouse import ClickHouse
from processors.embedded.refresh import RefreshReport, refresh
from processors.sinks.rejected import Rejected, write_rejected
from processors.sinks.requests import write_events
from schemas.codec import decode_event, iter_ndjson
from schemas.errors import InvalidEvent
from schemas.event import RequestEvent

__all__ = [
    "DEFAULT_BATCH",
    "MAX_REJECTS_KEPT",
    "IngestReport",
    "Validated",
    "ingest_lines",
    "validate_lines",
]

DEFAULT_BATCH = 20_000
#: Rejected lines stored per run (per file); the others are counted, not stored.
MAX_REJECTS_KEPT = 10_000
#: Fold stored rows into the buckets every this many events, so that a refresh
#: never holds more than this many rows in memory (a 1 GB file stays bounded).
REFRESH_EVERY = 200_000
_SAMPLES = 20


@dataclass(slots=True)
class IngestReport:
    lines: int = 0
    accepted: int = 0
    stored: int = 0
    #: every rejected line
    rejected: int = 0
    #: rejected lines stored in telemetry.rejected (at most ``MAX_REJECTS_KEPT``)
    rejected_kept: int = 0
    rejected_samples: list[tuple[int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    refresh: RefreshReport | None = None

    @property
    def duplicates(self) -> int:
        return self.accepted - self.stored

    @property
    def rejected_not_kept(self) -> int:
        return self.rejected - self.rejected_kept


class Validated(NamedTuple):
    events: list[RequestEvent]
    #: the first ``keep`` rejected lines, in order
    rejected: list[Rejected]
    #: the line number of each kept reject
    rejected_lines: list[int]
    #: every rejected line, kept or not
    rejected_count: int


def validate_lines(
    lines: Iterable[tuple[int, bytes]],
    *,
    source: str,
    now: datetime | None = None,
    keep: int = MAX_REJECTS_KEPT,
) -> Validated:
    """Split numbered lines into valid events and rejects (with line numbers).

    Only the first ``keep`` rejects are kept; the others are counted, nothing more.
    """
    now = now or datetime.now(UTC)
    good: list[RequestEvent] = []
    bad: list[Rejected] = []
    bad_lines: list[int] = []
    count = 0
    for lineno, raw in lines:
        try:
            good.append(decode_event(raw, now=now))
        except InvalidEvent as exc:
            count += 1
            if len(bad) < keep:
                bad.append(Rejected(source, f"line {lineno}", exc.field, exc.reason, raw))
                bad_lines.append(lineno)
    return Validated(good, bad, bad_lines, count)


def ingest_lines(
    ch: ClickHouse,
    chunks: Iterable[bytes],
    *,
    source: str,
    batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[IngestReport], None] | None = None,
    do_refresh: bool = True,
    keep_rejects: int = MAX_REJECTS_KEPT,
) -> IngestReport:
    """Store the valid events of ``chunks``, and the first ``keep_rejects`` rejected lines."""
    report = IngestReport()
    started = time.perf_counter()
    batch: list[tuple[int, bytes]] = []

    def flush() -> None:
        room = keep_rejects - report.rejected_kept
        good, bad, bad_lines, bad_count = validate_lines(batch, source=source, keep=room)
        write_rejected(ch, bad)
        report.stored += write_events(ch, good)
        report.accepted += len(good)
        report.rejected += bad_count
        report.rejected_kept += len(bad)
        for lineno, item in zip(bad_lines, bad, strict=True):
            if len(report.rejected_samples) < _SAMPLES:
                report.rejected_samples.append((lineno, item.reason))
        batch.clear()
        if on_batch:
            on_batch(report)

    since_refresh = 0
    for numbered in iter_ndjson(chunks):
        batch.append(numbered)
        report.lines = numbered[0]
        if len(batch) >= batch_size:
            since_refresh += len(batch)
            flush()
            if do_refresh and since_refresh >= REFRESH_EVERY:
                report.refresh = refresh(ch)
                since_refresh = 0
    if batch:
        flush()
    if do_refresh:
        report.refresh = refresh(ch)
    report.elapsed_s = time.perf_counter() - started
    return report
