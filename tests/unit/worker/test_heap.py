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


_LARGE_BLOCKS = r"""
import sys
import psutil
from processors.worker.heap import fix_mmap_threshold

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
size = 300 * 1024
first = bytearray(size)
del first  # glibc, left alone, now serves blocks of this size from the heap
blocks, small = [], []
for _ in range(200):
    blocks.append(bytearray(size))
    small.append(bytearray(64))  # pins the heap between the large blocks
proc = psutil.Process()
before = proc.memory_info().rss
del blocks[::2]  # every other large block freed: holes, not the heap's top
print((before - proc.memory_info().rss) >> 20)
"""


def test_large_blocks_go_back_to_the_system_when_freed() -> None:
    """With the threshold pinned, each large block is its own mapping, unmapped when
    freed; glibc's moving threshold would have put them in the heap, holes and all."""
    import subprocess
    import sys

    if not HeapTrimmer().available:
        pytest.skip("not glibc (no malloc_trim, no mallopt)")
    freed = int(
        subprocess.run(
            [sys.executable, "-c", _LARGE_BLOCKS, "fixed"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert freed >= 25, freed  # 100 blocks of 300 KiB: ~29 MiB
