"""The worker's Prometheus metrics: fold outcomes per partition, lag gauges, stuck counts."""

from __future__ import annotations

import logging

import pytest

from processors.worker.fold import FoldStats
from processors.worker.metrics import WorkerMetrics


class _Counters:
    fenced = 3
    reread = 500


def value(m: WorkerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


def test_fold_outcomes_are_counted_per_partition() -> None:
    m = WorkerMetrics()
    m.on_fold(2, FoldStats(counted=10, duplicates=2, replayed=1, outside_window=4))
    m.on_fold(2, FoldStats(counted=5))
    m.on_fold(0, FoldStats(counted=1))
    assert value(m, "telemetry_worker_events_folded_total", partition="2") == 15
    assert value(m, "telemetry_worker_events_folded_total", partition="0") == 1
    assert value(m, "telemetry_worker_duplicates_total", partition="2") == 2
    assert value(m, "telemetry_worker_replayed_total", partition="2") == 1
    assert value(m, "telemetry_worker_outside_window_total", partition="2") == 4
    assert value(m, "telemetry_worker_run_events_count") == 3
    assert value(m, "telemetry_worker_run_events_sum") == 23


def test_counters_without_hooks_are_read_when_scraped() -> None:
    m = WorkerMetrics()
    counters = _Counters()
    m.watch(counters)
    assert value(m, "telemetry_worker_fenced_events_total") == 3
    counters.reread = 1_000
    assert value(m, "telemetry_worker_reread_records_total") == 1_000


def test_publication_sets_its_time_and_counts_rows() -> None:
    m = WorkerMetrics(stats_interval_s=2.0)
    assert value(m, "telemetry_worker_stats_interval_seconds") == 2.0
    m.on_publish(7, 3)
    assert value(m, "telemetry_worker_published_rows_total", kind="stats") == 7
    assert value(m, "telemetry_worker_published_rows_total", kind="hourly") == 3
    assert (value(m, "telemetry_worker_last_publication_timestamp_seconds") or 0) > 0


def test_lag_gauges_follow_the_partitions_held() -> None:
    m = WorkerMetrics()
    m.observe({0: (100, 60), 1: (50, 50)}, now=0.0, moving=False)
    assert value(m, "telemetry_worker_lag", partition="0") == 40
    assert value(m, "telemetry_worker_lag", partition="1") == 0
    assert value(m, "telemetry_worker_partitions_held") == 2
    m.observe({1: (80, 50)}, now=1.0, moving=False)  # partition 0 revoked
    assert value(m, "telemetry_worker_lag", partition="0") is None
    assert value(m, "telemetry_worker_lag", partition="1") == 30
    assert value(m, "telemetry_worker_partitions_held") == 1


def test_a_stuck_partition_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    m = WorkerMetrics(stuck_after_s=10.0)
    m.on_fold(0, FoldStats(counted=1))
    m.observe({0: (100, 60), 1: (10, 0)}, now=0.0, moving=False)
    m.on_fold(1, FoldStats(counted=5))  # partition 1 moves on, partition 0 does not
    with caplog.at_level(logging.WARNING, logger="processors.worker.metrics"):
        verdicts = m.observe({0: (120, 60), 1: (20, 0)}, now=10.0, moving=False)
    assert [(v.kind, v.partition) for v in verdicts] == [("stuck", 0)]
    assert value(m, "telemetry_worker_stuck_partitions_total") == 1
    assert value(m, "telemetry_worker_partitions_stuck") == 1
    assert [r.getMessage() for r in caplog.records] == [verdicts[0].message()]
    m.on_fold(0, FoldStats(counted=1))
    m.observe({0: (120, 70), 1: (20, 0)}, now=11.0, moving=False)
    assert value(m, "telemetry_worker_partitions_stuck") == 0
    assert value(m, "telemetry_worker_stuck_partitions_total") == 1
