"""Exact totals under faults: SIGKILLed workers, and a second worker joining then leaving.

Every test produces a known stream (with resent duplicates) to its own topics,
runs real `telemetry worker` processes against the real broker, and waits for
``model_stats_7d`` to equal the counts computed independently from the events.
Over-counting fails as surely as loss: the comparison is equality.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_util import (
    SinkThread,
    WorkerProcess,
    as_events,
    settings_env,
    settings_for,
    synthetic_events,
    wait_exact,
    wait_for,
    wanted_counts,
    with_duplicates,
)

from processors.kafka_io import ensure_topics, produce_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _produce(bootstrap: str, settings: Any, docs: list[dict[str, Any]]) -> None:
    async def go() -> None:
        await ensure_topics(
            bootstrap,
            [settings.topic, settings.stats_topic, settings.hourly_topic, settings.dlq_topic],
            partitions=4,
        )
        await produce_events(bootstrap, settings.topic, as_events(docs))

    asyncio.run(go())


def test_sigkill_three_times_totals_exact(
    kafka_bootstrap: str, clickhouse: Any, clickhouse_dsn: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(topic_prefix)
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    unique = synthetic_events(200_000, seed=11)
    stream = with_duplicates(unique, 0.02, seed=12)
    _produce(kafka_bootstrap, settings, stream[: len(stream) // 2])

    rng = random.Random(13)
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, tmp_path / "state", log)
    with SinkThread(settings, clickhouse_dsn, kafka_bootstrap, f"{topic_prefix}-sink") as sink:
        for round_ in range(3):
            worker.start()
            # Kill at a random point once the worker is really folding events.
            wait_for(
                lambda: b"published" in log.read_bytes(),
                timeout=120,
                what="the worker to publish (it is consuming)",
            )
            time.sleep(rng.uniform(0.2, 3.0))  # the random kill point, not a synchronisation
            worker.kill()
            if round_ == 0:
                _produce(kafka_bootstrap, settings, stream[len(stream) // 2 :])
        worker.start()
        try:
            wait_exact(clickhouse, wanted_counts(unique), what="exact counts after 3 SIGKILLs")
        finally:
            worker.stop()
        assert sink.error is None
    assert clickhouse.query("SELECT count() FROM telemetry.requests")[0][0] == len(unique)


def test_second_worker_joins_and_leaves_totals_exact(
    kafka_bootstrap: str, clickhouse: Any, clickhouse_dsn: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(topic_prefix)
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    unique = synthetic_events(120_000, seed=21)
    stream = with_duplicates(unique, 0.02, seed=22)
    third = len(stream) // 3
    _produce(kafka_bootstrap, settings, stream[:third])

    one = WorkerProcess(env, tmp_path / "one", tmp_path / "one.log")
    two = WorkerProcess(env, tmp_path / "two", tmp_path / "two.log")
    with SinkThread(settings, clickhouse_dsn, kafka_bootstrap, f"{topic_prefix}-sink") as sink:
        one.start()
        try:
            wait_for(
                lambda: b"published" in (tmp_path / "one.log").read_bytes(),
                timeout=120,
                what="worker one to publish",
            )
            two.start()
            _produce(kafka_bootstrap, settings, stream[third : 2 * third])
            wait_for(
                lambda: b"published" in (tmp_path / "two.log").read_bytes(),
                timeout=120,
                what="worker two to join and publish",
            )
            two.stop()  # leaves: its partitions go back to worker one
            _produce(kafka_bootstrap, settings, stream[2 * third :])
            wait_exact(clickhouse, wanted_counts(unique), what="exact counts after rebalances")
        finally:
            one.stop()
            two.stop()
        assert sink.error is None
