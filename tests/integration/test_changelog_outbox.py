"""The changelog outbox on the real broker: each partition's writes in order, in few
batches, tombstones kept, and the store told the last offset it holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pipeline_util import read_partitions

from processors.kafka_io import ensure_topics
from processors.worker.changelog_outbox import ChangelogOutbox
from processors.worker.pending_writes import PendingWrites

pytestmark = pytest.mark.integration


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class _Store:
    def __init__(self) -> None:
        self.persisted: dict[int, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        assert offset >= self.persisted.get(tp.partition, -1), "persisted offset went back"
        self.persisted[tp.partition] = offset


class _Table:
    """What the outbox reads of a Faust table: its changelog topic and its store."""

    def __init__(self, topic: str) -> None:
        self.changelog_topic = _Topic(topic)
        self.data = _Store()


class _CountingWrites(PendingWrites):
    added = 0

    def add(self, fut: asyncio.Future[Any]) -> None:
        self.added += 1
        super().add(fut)


def test_each_partitions_writes_arrive_in_order_and_the_store_knows_the_last_offset(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.outbox-changelog"
    value = bytes(range(256)) * 8  # 2 KiB: a few hundred writes fill a producer batch

    async def go() -> tuple[_Table, dict[int, list[Any]], _CountingWrites]:
        await ensure_topics(kafka_bootstrap, [topic], partitions=3)
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", max_batch_size=64 * 1024
        )
        await producer.start()
        writes = _CountingWrites(timeout_s=60)
        table = _Table(topic)
        outbox = ChangelogOutbox(lambda: producer, writes)
        try:
            for i in range(1_000):
                part, key = i % 3, f"k{i % 50}".encode()
                held = outbox.put(table, part, key, None if i % 97 == 0 else value)
                assert held.message.partition == part
            assert len(outbox) == 1_000
            await outbox.flush()
            assert len(outbox) == 0
            await writes.settled()
        finally:
            await producer.stop()
        return table, await read_partitions(kafka_bootstrap, topic, [0, 1, 2]), writes

    table, got, writes = asyncio.run(go())
    assert 3 <= writes.added < 100  # batches of 64 KiB, not a future per write
    assert len(writes) == 0
    for part in range(3):
        sent = [i for i in range(1_000) if i % 3 == part]
        records = got[part]
        assert [r.key for r in records] == [f"k{i % 50}".encode() for i in sent]
        assert [r.value for r in records] == [None if i % 97 == 0 else value for i in sent]
        assert table.data.persisted[part] == records[-1].offset
