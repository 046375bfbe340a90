"""The worker gives freed heap memory back (processors/worker/heap.py)."""

from __future__ import annotations

import psutil
import pytest

from processors.worker.heap import HeapTrimmer


def test_a_trim_returns_freed_blocks_scattered_through_the_heap() -> None:
    trimmer = HeapTrimmer(every_s=0.0)
    if not trimmer.available:
        pytest.skip("no malloc_trim in this C library")
    proc = psutil.Process()
    blocks = [bytearray(4000) for _ in range(60_000)]  # ~240 MB of malloc'd blocks
    kept = blocks[::10]  # pins pages all through the heap: no trim from the top alone
    del blocks
    before = proc.memory_info().rss
    assert trimmer.maybe()
    after = proc.memory_info().rss
    assert before - after > 100 * 2**20, (before >> 20, after >> 20)
    assert len(kept) == 6_000


def test_at_most_one_trim_per_period() -> None:
    now = [100.0]
    trimmer = HeapTrimmer(every_s=1.0, clock=lambda: now[0])
    if not trimmer.available:
        pytest.skip("no malloc_trim in this C library")
    assert trimmer.maybe()
    now[0] += 0.5
    assert not trimmer.maybe()
    now[0] += 0.6
    assert trimmer.maybe()
