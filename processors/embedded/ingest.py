"""NDJSON events into the embedded store: validate, keep rejects, dedupe, store, refresh.

Streams in bounded memory: lines are read in chunks, validated and written in
batches, so a 1 GB file costs one batch of memory, not a gigabyte.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from processors.clickhouse import ClickHouse
from processors.embedded.refresh import RefreshReport, refresh
from processors.sinks.rejected import Rejected, write_rejected
from processors.sinks.requests import write_events
from schemas.codec import decode_event, iter_ndjson
from schemas.errors import InvalidEvent
from schemas.event import RequestEvent

__all__ = ["DEFAULT_BATCH", "IngestReport", "ingest_lines", "validate_lines"]

DEFAULT_BATCH = 20_000
#: Fold stored rows into the buckets every this many events, so that a refresh
#: never holds more than this many rows in memory (a 1 GB file stays bounded).
REFRESH_EVERY = 200_000
_SAMPLES = 20


@dataclass(slots=True)
class IngestReport:
    lines: int = 0
    accepted: int = 0
    stored: int = 0
    rejected: int = 0
    rejected_samples: list[tuple[int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    refresh: RefreshReport | None = None

    @property
    def duplicates(self) -> int:
        return self.accepted - self.stored


def validate_lines(
    lines: Iterable[tuple[int, bytes]], *, source: str, now: datetime | None = None
) -> tuple[list[RequestEvent], list[Rejected], list[int]]:
    """Split numbered lines into valid events and rejects (with line numbers)."""
    now = now or datetime.now(UTC)
    good: list[RequestEvent] = []
    bad: list[Rejected] = []
    bad_lines: list[int] = []
    for lineno, raw in lines:
        try:
            good.append(decode_event(raw, now=now))
        except InvalidEvent as exc:
            bad.append(Rejected(source, f"line {lineno}", exc.field, exc.reason, raw))
            bad_lines.append(lineno)
    return good, bad, bad_lines


def ingest_lines(
    ch: ClickHouse,
    chunks: Iterable[bytes],
    *,
    source: str,
    batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[IngestReport], None] | None = None,
    do_refresh: bool = True,
) -> IngestReport:
    report = IngestReport()
    started = time.perf_counter()
    batch: list[tuple[int, bytes]] = []

    def flush() -> None:
        good, bad, bad_lines = validate_lines(batch, source=source)
        write_rejected(ch, bad)
        report.stored += write_events(ch, good)
        report.accepted += len(good)
        report.rejected += len(bad)
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
