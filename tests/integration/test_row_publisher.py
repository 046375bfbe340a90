"""Published rows through one producer batch per partition, on the real broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from pipeline_util import read_partitions

from processors.kafka_io import ensure_topics
from processors.worker.row_publisher import PublishFailed, RowPublisher
from schemas.event_record import partition_for

pytestmark = pytest.mark.integration


def test_rows_arrive_once_in_their_keys_partition_in_order(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.rows"
    rows = [(f"model-{i % 97}".encode(), f"row {i}".encode()) for i in range(5_000)]

    async def go() -> tuple[int, list[tuple[int, bytes, bytes]], list[int]]:
        await ensure_topics(kafka_bootstrap, [topic], partitions=4)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            sent = await RowPublisher(lambda: producer).send(topic, rows)
            parts = sorted(await producer.partitions_for(topic))
        finally:
            await producer.stop()
        got = await read_partitions(kafka_bootstrap, topic, parts)
        return sent, [(p, r.key, r.value) for p in parts for r in got[p]], parts

    sent, got, parts = asyncio.run(go())
    assert sent == len(rows)
    assert sorted((k, v) for _, k, v in got) == sorted(rows)
    for part, key, _ in got:
        assert part == parts[partition_for(key, len(parts))]
    assert len({p for p, _, _ in got}) == 4
    for key in {k for k, _ in rows}:
        assert [v for _, k, v in got if k == key] == [v for k, v in rows if k == key]


def test_a_publication_the_producer_cannot_deliver_fails_in_time(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.rows-closed"

    async def go() -> None:
        await ensure_topics(kafka_bootstrap, [topic], partitions=2)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        await producer.stop()  # a producer that is gone: nothing can be acknowledged
        with pytest.raises(PublishFailed, match="3 rows to"):
            await RowPublisher(lambda: producer, timeout_s=2.0).send(topic, [(b"k", b"v")] * 3)

    asyncio.run(asyncio.wait_for(go(), 30))
