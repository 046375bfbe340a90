"""The gap reader on the real broker: a run of offsets, exactly, from any start."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from processors.kafka_io import ensure_topics
from processors.worker.gap_reader import GapReader

pytestmark = pytest.mark.integration


def test_reads_exactly_the_requested_run_of_one_partition(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.gaps"

    async def go() -> tuple[list[tuple[int, bytes]], list[int], list[int]]:
        await ensure_topics(kafka_bootstrap, [topic], partitions=2)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(500):
                await producer.send(topic, f"p1-{i}".encode(), partition=1)
                if i % 2 == 0:
                    await producer.send(topic, f"p0-{i}".encode(), partition=0)
            await producer.flush()
        finally:
            await producer.stop()
        reader = GapReader(kafka_bootstrap, topic)
        try:
            run = await reader.read(1, 120, 377)
            # The same reader, another partition, and a run read again: no state leaks.
            other = await reader.read(0, 0, 250)
            again = await reader.read(1, 376, 380)
        finally:
            await reader.close()
        return (
            [(r.offset, r.value) for r in run],
            [r.offset for r in other],
            [r.offset for r in again],
        )

    run, other, again = asyncio.run(go())
    assert run == [(o, f"p1-{o}".encode()) for o in range(120, 377)]
    assert other == list(range(250))
    assert again == [376, 377, 378, 379]
