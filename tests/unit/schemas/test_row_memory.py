"""Encoded rows and events hold what they say: no orjson over-allocation kept alive.

orjson (3.12+) returns each result in a buffer of at least 4 KiB; a worker
queues thousands of rows per publication, so ``encode_row`` copies to a
right-sized ``bytes``.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

from pipeline_util import make_event

from collector.encoding import encode_record
from processors.aggregate import HourBucket
from schemas.event import RequestEvent
from schemas.stats import StatsRow, encode_row


def test_encoded_rows_take_about_their_length_in_memory() -> None:
    bucket = HourBucket()
    for i in range(20):
        bucket.add_values("ok", None, 100.0 + i, 2_000.0 + i, 100, 300)
    now = datetime.now(UTC)
    row = StatsRow("vendor/model", "provider", now, now, bucket.figures())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rows = [encode_row(row) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    length = sum(map(len, rows))
    assert held < 2 * length + 200 * 64, (held, length)


def test_encoded_event_records_take_about_their_length_in_memory() -> None:
    events = [RequestEvent.model_validate(make_event()) for _ in range(200)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records = [encode_record(e, "t") for e in events]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    length = sum(len(v) for _, _, v in records)
    assert held < 2 * length + 200 * 200, (held, length)
