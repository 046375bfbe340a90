"""`telemetry simulate --to kafka`: the events topic gets every event, keyed by model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration


async def _consume(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(out) < expected:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    out.extend((r.key or b"", r.value or b"") for r in records)
    finally:
        await consumer.stop()
    return out


def test_simulate_to_kafka(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    topic = f"{topic_prefix}.requests"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update(
        TELEMETRY_KAFKA=kafka_bootstrap,
        TELEMETRY_TOPIC=topic,
        TELEMETRY_DLQ_TOPIC=f"{topic_prefix}.dlq",
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "telemetry.cli", "simulate", "--backfill", "1d"),
            *("--events", "5000", "--to", "kafka", "--seed", "4"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()
    got = asyncio.run(_consume(kafka_bootstrap, topic, 5000))
    assert len(got) == 5000
    models: Counter[str] = Counter()
    for key, value in got:
        event = orjson.loads(value)
        assert key == event["model"].encode()
        models[event["model"]] += 1
    assert len(models) == 12
