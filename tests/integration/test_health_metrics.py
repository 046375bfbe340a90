"""Pipeline health under load: a worker and the sink as processes on the test broker, each
serving /metrics on a free port, a backlog of single-event records drained while the test
scrapes; then `telemetry status` while both run.

The metrics must move with the traffic and end exact: every unique event folded once,
every resent copy counted as a duplicate, the lag seen above 0 while the backlog drains
and at 0 after, publications going on, the sink's rows equal to the events.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from pipeline_util import (
    pipeline_settings,
    settings_env,
    synthetic_events,
    wait_for,
    with_duplicates,
)
from prometheus_client.parser import text_string_to_metric_families

from processors.kafka_io import dlq_record

pytestmark = pytest.mark.integration

UNIQUE = 24_000
RESENT = 0.025  # 600 copies
DEAD_LETTERS = 3


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def per_label(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def metrics_port(log: Path, role: str) -> int | None:
    found = re.search(rf"{role} metrics: http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
    return int(found.group(1)) if found else None


async def _produce(bootstrap: str, topic: str, docs: list[dict[str, object]]) -> None:
    """One event per record, keyed by model: a producer other than ours (docs/record-format.md)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, orjson.dumps(d), key=str(d["model"]).encode()) for d in docs
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _dead_letters(bootstrap: str, topic: str, n: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            raw = dlq_record(
                source="test", location=f"line {i}", field="$", reason="$: bad", raw=b"{"
            )
            await producer.send_and_wait(topic, raw)
    finally:
        await producer.stop()


def test_health_metrics_move_under_load(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = pipeline_settings(kafka_bootstrap, topic_prefix, partitions=4)
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    env.update(
        TELEMETRY_STATS_INTERVAL_S="2",
        TELEMETRY_WORKER_STUCK_AFTER_S="4",  # health ticks every second
        TELEMETRY_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    unique = synthetic_events(UNIQUE, seed=21)
    docs = with_duplicates(unique, RESENT, seed=22)
    resent = len(docs) - len(unique)
    # The backlog waits in Kafka before the worker starts: thousands of records, drained
    # at most 1,000 per batch, so the lag is above 0 for a while whatever the machine.
    asyncio.run(_produce(kafka_bootstrap, settings.topic, docs))
    asyncio.run(_dead_letters(kafka_bootstrap, settings.dlq_topic, DEAD_LETTERS))

    migrate = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "migrate"], env=env, capture_output=True
    )
    assert migrate.returncode == 0, migrate.stderr
    logs = {role: tmp_path / f"{role}.log" for role in ("worker", "sink")}
    handles = [logs["worker"].open("wb"), logs["sink"].open("wb")]
    procs = {
        "worker": subprocess.Popen(
            [sys.executable, "-m", "telemetry.cli", "worker", "--state-dir", str(tmp_path / "s")],
            env=env,
            stdout=handles[0],
            stderr=subprocess.STDOUT,
        ),
        "sink": subprocess.Popen(
            [sys.executable, "-m", "telemetry.cli", "worker", "--sink"],
            env=env,
            stdout=handles[1],
            stderr=subprocess.STDOUT,
        ),
    }
    try:
        worker = wait_for(
            lambda: metrics_port(logs["worker"], "worker"), timeout=60, what="worker /metrics"
        )
        sink = wait_for(
            lambda: metrics_port(logs["sink"], "sink"), timeout=60, what="sink /metrics"
        )

        lags_seen: list[float] = []

        def drained() -> bool:
            s = scrape(worker)
            lag = per_label(s, "telemetry_worker_lag")
            lags_seen.extend(lag.values())
            return (
                total(s, "telemetry_worker_events_folded_total") >= UNIQUE
                and len(lag) == 4
                and all(v == 0 for v in lag.values())
            )

        try:
            wait_for(drained, timeout=300, every=0.2, what="the worker to fold the backlog")
        except AssertionError as exc:
            s = scrape(worker)
            seen = {k: v for k, v in s.items() if k[0].startswith("telemetry_worker")}
            log = logs["worker"].read_text()[-3000:]
            raise AssertionError(f"{exc}; last scrape {seen}; worker log: {log}") from None
        assert max(lags_seen) > 0, "the lag gauge never showed the backlog"
        s = scrape(worker)
        assert total(s, "telemetry_worker_events_folded_total") == UNIQUE
        assert total(s, "telemetry_worker_duplicates_total") == resent
        assert total(s, "telemetry_worker_invalid_total") == 0
        assert total(s, "telemetry_worker_batch_records_count") > 0
        assert total(s, "telemetry_worker_batch_records_sum") >= len(docs)
        assert total(s, "telemetry_worker_partitions_held") == 4
        ends = per_label(s, "telemetry_worker_end_offset")
        assert sum(ends.values()) == len(docs)  # one record per event sent
        first = total(s, "telemetry_worker_last_publication_timestamp_seconds")
        assert first > 0
        wait_for(
            lambda: (
                total(scrape(worker), "telemetry_worker_last_publication_timestamp_seconds") > first
            ),
            timeout=60,
            what="a later publication",
        )

        def stored() -> bool:
            s = scrape(sink)
            rows = per_label(s, "telemetry_sink_rows_written_total")
            return (
                rows.get((("table", "requests"),)) == UNIQUE
                and rows.get((("table", "rejected"),)) == DEAD_LETTERS
            )

        try:
            wait_for(stored, timeout=300, what="the sink to store every event and dead letter")
        except AssertionError as exc:
            s = scrape(sink)
            seen = {k: v for k, v in s.items() if k[0].startswith("telemetry_sink")}
            log = logs["sink"].read_text()[-3000:]
            raise AssertionError(f"{exc}; last scrape {seen}; sink log: {log}") from None
        s = scrape(sink)
        assert total(s, "telemetry_sink_events_read_total") == len(docs)  # copies dropped
        assert total(s, "telemetry_sink_batches_total") > 0
        assert total(s, "telemetry_sink_write_retries_total") == 0
        assert total(s, "telemetry_sink_last_write_timestamp_seconds") > 0
        wait_for(
            lambda: (
                total(scrape(sink), "telemetry_sink_stats_as_of_timestamp_seconds")
                > time.time() - 60
            ),
            timeout=120,
            what="fresh stats stored by the sink",
        )

        last_status: list[object] = []

        def healthy() -> dict[str, object] | None:
            out = subprocess.run(
                [sys.executable, "-m", "telemetry.cli", "status", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, out.stderr
            doc = orjson.loads(out.stdout)
            worker_lag = [r for r in doc["lag"] if r["who"] == "worker"]
            done = (
                len(worker_lag) == 4
                and all(r["lag"] == 0 for r in worker_lag)
                and sum(r["end"] for r in worker_lag) == len(docs)
                and all(r["lag"] == 0 for r in doc["lag"])
                and doc["stats_state"] in ("ok", "quiet")  # nothing waits: never stale
            )
            last_status[:] = [doc]
            return doc if done else None

        try:
            doc = wait_for(
                healthy, timeout=120, what="`telemetry status` to show the pipeline caught up"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {last_status}") from None
        assert doc["mode"] == "kafka" and doc["store_error"] is None
        assert doc["stats_stale"] is False
        # The newest stats it read are those the sink reports storing (read around it).
        before = total(scrape(sink), "telemetry_sink_stats_as_of_timestamp_seconds")
        as_of = orjson.loads(
            subprocess.run(
                [sys.executable, "-m", "telemetry.cli", "status", "--json"],
                env=env,
                capture_output=True,
                timeout=120,
            ).stdout
        )["stats_as_of"]
        after = total(scrape(sink), "telemetry_sink_stats_as_of_timestamp_seconds")
        assert before - 0.001 <= datetime.fromisoformat(as_of).timestamp() <= after + 0.001
        assert doc["dead_letters"] == DEAD_LETTERS
        assert {r["topic"] for r in doc["lag"] if r["who"] == "sink"} == {
            settings.topic,
            settings.dlq_topic,
            settings.stats_topic,
            settings.hourly_topic,
        }
        assert all(p.poll() is None for p in procs.values())
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for fh in handles:
            fh.close()
    # 143: the worker's bounded stop (docs/deploy.md) fired on a loaded machine; not our
    # subject here, and it loses nothing.
    assert procs["worker"].returncode in (0, 143), logs["worker"].read_text()[-3000:]
    assert procs["sink"].returncode == 0, logs["sink"].read_text()[-3000:]
