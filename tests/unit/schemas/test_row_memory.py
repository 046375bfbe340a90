"""A published row's bytes hold what they say: no orjson over-allocation kept alive.

orjson (3.12+) returns each result in a buffer of at least 4 KiB; a worker
queues thousands of rows per publication, so ``encode_row`` copies to a
right-sized ``bytes``.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

from processors.aggregate import HourBucket
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
