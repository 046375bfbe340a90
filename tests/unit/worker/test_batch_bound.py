"""``BatchBound``: the next batch's byte bound follows the bucket writes of the last one."""

from __future__ import annotations

import pytest

from processors.worker.batch_bound import MIB, BatchBound


def test_it_starts_at_start() -> None:
    assert BatchBound(start=16 * MIB)() == 16 * MIB


def test_a_batch_of_one_bucket_per_event_shrinks_the_next_one() -> None:
    bound = BatchBound(start=16 * MIB, low=4 * MIB, high=64 * MIB, writes=25_000)
    bound.after(16 * MIB, 50_000)  # twice the writes wanted: half the bytes
    assert bound() == 8 * MIB
    bound.after(8 * MIB, 25_000)  # the same rate: it stays
    assert bound() == 8 * MIB


def test_a_batch_of_few_buckets_grows_the_next_one_up_to_high() -> None:
    bound = BatchBound(start=16 * MIB, low=4 * MIB, high=64 * MIB, writes=25_000)
    bound.after(16 * MIB, 10_000)
    assert bound() == 40 * MIB
    bound.after(40 * MIB, 400)
    assert bound() == 64 * MIB
    bound.after(64 * MIB, 0)  # nothing written (all duplicates, or fenced)
    assert bound() == 64 * MIB


def test_it_never_leaves_low_and_high() -> None:
    bound = BatchBound(start=16 * MIB, low=4 * MIB, high=64 * MIB, writes=25_000)
    bound.after(16 * MIB, 10**9)
    assert bound() == 4 * MIB
    bound.after(1, 0)
    assert bound() == 64 * MIB


def test_an_empty_batch_tells_nothing() -> None:
    bound = BatchBound(start=16 * MIB)
    bound.after(0, 0)
    assert bound() == 16 * MIB


@pytest.mark.parametrize(
    ("start", "low", "high", "writes"),
    [(1, 2, 3, 10), (5, 1, 4, 10), (0, 0, 4, 10), (2, 1, 4, 0)],
)
def test_a_bound_that_cannot_hold_is_refused(start: int, low: int, high: int, writes: int) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        BatchBound(start=start, low=low, high=high, writes=writes)
