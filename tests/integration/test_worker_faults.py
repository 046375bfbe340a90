"""Exact totals under faults: SIGKILLed workers, and a second worker joining then leaving.

Every test produces a known stream (with resent duplicates) to its own topics,
runs real `telemetry worker` processes against the real broker, and waits for
``model_stats_7d`` to equal the counts computed independently from the events.
Over-counting fails as surely as loss: the comparison is equality.
"""

from __future__ import annotations

import asyncio
import random
import re
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


def _skip_ahead_committed(bootstrap: str, settings: Any, share: float) -> tuple[int, int]:
    """Commit the worker group's offsets ``share`` of the way into what it has not read yet.

    This is what Faust does when it drops re-fetched messages after a
    rebalance and commits past them: the consumer group says "done" for
    events the state never folded. Returns how many records, and how many
    events, were skipped (a record carries a batch of events: its lines count).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import (
        IllegalGenerationError,
        RebalanceInProgressError,
        UnknownMemberIdError,
    )
    from aiokafka.structs import OffsetAndMetadata

    from schemas.event_record import record_lines

    async def go() -> tuple[int, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=settings.worker_id, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(settings.topic, p) for p in range(4)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            records = events = 0
            ahead = {}
            for tp in tps:
                done = await consumer.committed(tp) or 0
                target = done + int((ends[tp] - done) * share)
                ahead[tp] = OffsetAndMetadata(target, "")
                records += target - done
                if target > done:
                    consumer.seek(tp, done)
                    while await consumer.position(tp) < target:
                        for m in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                            if m.offset < target:
                                events += len(record_lines(m.value, m.headers))
            # The broker takes a commit from outside the group only once the
            # group is empty: a worker stopped by its deadline (no LeaveGroup)
            # stays a member until its session times out.
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                try:
                    await consumer.commit(ahead)
                    break
                except (UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError):
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(1.0)
            return records, events
        finally:
            await consumer.stop()

    return asyncio.run(go())


@pytest.mark.parametrize("share", [0.5, 1.0], ids=["halfway", "to-the-end"])
def test_committed_offsets_ahead_of_the_state_lose_nothing(
    kafka_bootstrap: str,
    clickhouse: Any,
    clickhouse_dsn: str,
    topic_prefix: str,
    tmp_path: Path,
    share: float,
) -> None:
    """The state, not the consumer group, says where each partition stands.

    Halfway: Faust delivers the events after the skipped run, the worker
    reads the run itself. To the end: Faust delivers nothing at all, and
    the worker must notice at its next tick that its state is behind the log.
    """
    # Runs longer than this are read in steps, each folded and in the
    # changelog before the next; thousands of events per partition are skipped.
    settings = settings_for(topic_prefix, worker_reread_max=1_500)
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    unique = synthetic_events(40_000, seed=31)
    half = len(unique) // 2
    _produce(kafka_bootstrap, settings, unique[:half])
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, tmp_path / "state", log)
    with SinkThread(settings, clickhouse_dsn, kafka_bootstrap, f"{topic_prefix}-sink") as sink:
        worker.start()
        try:
            wait_exact(clickhouse, wanted_counts(unique[:half]), what="the first half counted")
        finally:
            worker.stop()
        _produce(kafka_bootstrap, settings, unique[half:])
        skipped, skipped_events = _skip_ahead_committed(kafka_bootstrap, settings, share)
        assert skipped_events > 1_000
        worker.start()
        try:
            wait_exact(clickhouse, wanted_counts(unique), what="exact counts after the skip")
        finally:
            worker.stop()
        assert sink.error is None
    text = log.read_bytes()
    # Every skipped record was read from Kafka by the worker itself, in steps
    # of at most 1,500 per partition.
    assert int(re.findall(rb"reread=(\d+)", text)[-1]) >= skipped
    if share == 1.0:  # nothing was delivered: the idle check found the backlog
        assert b"nothing arrived; reading the rest from Kafka" in text


def test_worker_on_a_new_disk_still_drops_duplicates_of_what_it_never_saw(
    kafka_bootstrap: str, clickhouse: Any, clickhouse_dsn: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A worker that starts with an empty state dir (a replaced machine, a
    rescheduled pod) restores everything from the changelogs: the buckets,
    each partition's expected offset and the `seen` ids. Resent copies of
    events counted by the first worker are not counted again."""
    settings = settings_for(topic_prefix)
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    unique = synthetic_events(30_000, seed=41)
    half = len(unique) // 2
    _produce(kafka_bootstrap, settings, unique[:half])
    with SinkThread(settings, clickhouse_dsn, kafka_bootstrap, f"{topic_prefix}-sink") as sink:
        first = WorkerProcess(env, tmp_path / "disk-one", tmp_path / "one.log")
        first.start()
        try:
            wait_exact(clickhouse, wanted_counts(unique[:half]), what="the first half counted")
        finally:
            first.stop()
        # Gateways resend a tenth of what was already counted, then the rest arrives.
        resent = random.Random(42).sample(unique[:half], half // 10)
        _produce(kafka_bootstrap, settings, resent + unique[half:])
        second = WorkerProcess(env, tmp_path / "disk-two", tmp_path / "two.log")
        second.start()
        try:
            wait_exact(clickhouse, wanted_counts(unique), what="exact counts on the new disk")
            wait_for(
                lambda: re.findall(rb"duplicates=(\d+)", (tmp_path / "two.log").read_bytes()),
                timeout=60,
                what="the new worker to log its counters",
            )
        finally:
            second.stop()
        dups = int(re.findall(rb"duplicates=(\d+)", (tmp_path / "two.log").read_bytes())[-1])
        assert dups == len(resent)
        assert sink.error is None
