"""`telemetry simulate --to kafka`: the events topic gets every event, in batch records
placed in each model's partition (docs/record-format.md)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.event_record import MAX_RECORD_BYTES, RECORD_HEADERS, partition_for, record_lines

pytestmark = pytest.mark.integration


async def _consume(bootstrap: str, topic: str, expected: int) -> tuple[list[Any], list[int]]:
    """The records of ``topic`` until they carry ``expected`` events; and its partitions."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[Any] = []
    events = 0
    try:
        async with asyncio.timeout(60):
            while events < expected:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    out.extend(records)
                    events += sum(len(record_lines(r.value, r.headers)) for r in records)
        parts = sorted(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()
    return out, parts


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
    records, parts = asyncio.run(_consume(kafka_bootstrap, topic, 5000))
    assert len(parts) > 1
    assert len(records) < 5000 // 50  # packed, not one record per event
    models: Counter[str] = Counter()
    for r in records:
        assert r.key is None
        assert list(r.headers) == RECORD_HEADERS
        assert len(r.value) <= MAX_RECORD_BYTES
        for line in record_lines(r.value, r.headers):
            event = orjson.loads(line)
            assert r.partition == parts[partition_for(event["model"].encode(), len(parts))]
            models[event["model"]] += 1
    assert sum(models.values()) == 5000
    assert len(models) == 12
