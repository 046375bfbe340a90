"""The stuck-partition rules of processors/worker/stuck.py, one test per rule."""

from __future__ import annotations

import pytest

from processors.worker.stuck import StuckDetector, Verdict

W = 60.0


def test_a_partition_caught_up_is_never_stuck() -> None:
    d = StuckDetector(W)
    for t in range(0, 600, 10):
        assert d.observe(0, end_offset=100, position=100, folded=0, now=float(t)) is None
    assert d.stuck == frozenset() and d.stuck_total == 0


def test_lag_without_progress_for_the_window_is_stuck_once() -> None:
    d = StuckDetector(W, repeat_s=1_000)
    assert d.observe(3, 100, 40, folded=7, now=0.0) is None
    assert d.observe(3, 120, 40, folded=7, now=W - 1) is None  # within the window
    v = d.observe(3, 150, 40, folded=7, now=W)
    assert v == Verdict("stuck", 3, 110, 60, W)
    assert "grew from 60" in v.message() and "partition 3" in v.message()
    assert d.stuck == {3} and d.stuck_total == 1
    assert d.observe(3, 160, 40, folded=7, now=W + 10) is None  # counted once


def test_lag_that_stays_the_same_is_stuck_too() -> None:
    d = StuckDetector(W)
    d.observe(1, 50, 10, folded=0, now=0.0)
    v = d.observe(1, 50, 10, folded=0, now=W + 5)
    assert v is not None and v.kind == "stuck" and v.lag == v.lag_at_start == 40
    assert "was 40" in v.message()


def test_folding_restarts_the_clock() -> None:
    d = StuckDetector(W)
    d.observe(0, 100, 10, folded=0, now=0.0)
    assert d.observe(0, 200, 10, folded=5, now=W - 1) is None  # folded something
    assert d.observe(0, 300, 10, folded=5, now=W + 1) is None  # 2 s since then
    v = d.observe(0, 300, 10, folded=5, now=2 * W)
    assert v is not None and v.kind == "stuck" and v.stalled_s == pytest.approx(W + 1)


def test_a_position_moving_forward_is_progress() -> None:
    d = StuckDetector(W)
    d.observe(0, 100, 10, folded=0, now=0.0)
    assert d.observe(0, 100, 20, folded=0, now=W) is None
    assert d.stuck == frozenset()


def test_still_stuck_is_repeated_at_most_every_repeat_s() -> None:
    d = StuckDetector(W, repeat_s=300)
    d.observe(0, 100, 0, folded=0, now=0.0)
    kinds = []
    for t in range(int(W), 1_200, 10):
        v = d.observe(0, 100, 0, folded=0, now=float(t))
        if v is not None:
            kinds.append((v.kind, t))
    assert kinds == [
        ("stuck", 60),
        ("still_stuck", 360),
        ("still_stuck", 660),
        ("still_stuck", 960),
    ]
    assert d.stuck_total == 1


def test_recovery_is_reported_once() -> None:
    d = StuckDetector(W)
    d.observe(2, 100, 0, folded=0, now=0.0)
    assert d.observe(2, 100, 0, folded=0, now=W).kind == "stuck"  # type: ignore[union-attr]
    v = d.observe(2, 120, 0, folded=30, now=W + 10)
    assert v is not None and v.kind == "recovered" and "folding again" in v.message()
    assert d.observe(2, 120, 0, folded=60, now=W + 20) is None
    assert d.stuck == frozenset() and d.stuck_total == 1


def test_lag_falling_to_zero_recovers() -> None:
    d = StuckDetector(W)
    d.observe(2, 100, 0, folded=0, now=0.0)
    d.observe(2, 100, 0, folded=0, now=W)
    v = d.observe(2, 100, 100, folded=0, now=W + 1)
    assert v is not None and v.kind == "recovered"


def test_a_second_stall_is_counted_again() -> None:
    d = StuckDetector(W)
    d.observe(0, 10, 0, folded=0, now=0.0)
    d.observe(0, 10, 0, folded=0, now=W)
    d.observe(0, 20, 0, folded=1, now=W + 1)  # recovered
    v = d.observe(0, 30, 0, folded=1, now=2 * W + 1)
    assert v is not None and v.kind == "stuck" and d.stuck_total == 2


def test_nothing_is_judged_while_partitions_move() -> None:
    d = StuckDetector(W)
    d.observe(0, 100, 0, folded=0, now=0.0)
    # A long table recovery: no fold is expected, and its time does not count.
    for t in range(10, 600, 10):
        assert d.observe(0, 100 + t, 0, folded=0, now=float(t), moving=True) is None
    # The stall clock starts at the last observation made while moving (t = 590).
    assert d.observe(0, 700, 0, folded=0, now=590 + W - 1) is None
    assert d.observe(0, 700, 0, folded=0, now=590 + W).kind == "stuck"  # type: ignore[union-attr]


def test_revoked_partitions_are_forgotten() -> None:
    d = StuckDetector(W)
    d.observe(0, 100, 0, folded=0, now=0.0)
    d.observe(1, 100, 0, folded=0, now=0.0)
    d.observe(0, 100, 0, folded=0, now=W)
    d.observe(1, 100, 0, folded=0, now=W)
    assert d.stuck == {0, 1}
    d.retain([1])
    assert d.stuck == {1}
    # Held again later: a fresh clock, no verdict from the old stall.
    assert d.observe(0, 100, 0, folded=0, now=W + 1) is None
    assert d.observe(0, 100, 0, folded=0, now=2 * W) is None
    assert d.stuck_total == 2


def test_unknown_offsets_are_no_evidence() -> None:
    d = StuckDetector(W)
    d.observe(0, 100, 0, folded=0, now=0.0)
    assert d.observe(0, None, 0, folded=0, now=W) is None
    assert d.observe(0, 100, None, folded=0, now=W) is None
    assert d.observe(0, 100, 0, folded=0, now=W).kind == "stuck"  # type: ignore[union-attr]


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        StuckDetector(0)
