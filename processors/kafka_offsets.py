"""Where a consumer group stands in its topics: end offsets, committed offsets, lag.

Read from the broker with aiokafka (a group-less consumer for the log's start
and end offsets, the admin client for a group's committed offsets); nothing
joins a group or commits. `telemetry status` shows it; the worker's own lag
gauge (``processors/worker/metrics.py``) means the same thing, end offset
minus committed offset, read from the worker's consumer instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from collector.topics import unreachable

__all__ = ["PartitionOffsets", "read_offsets"]


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    topic: str
    partition: int
    #: The log's first offset still held (retention moves it on).
    start: int
    #: One past the last record (the high watermark).
    end: int
    #: The group's committed offset; None if it never committed this partition.
    committed: int | None

    @property
    def lag(self) -> int:
        """Records the group has yet to process: all that the log holds if it never committed."""
        return max(0, self.end - (self.committed if self.committed is not None else self.start))

    @property
    def held(self) -> int:
        """Records the log holds now (a dead-letter topic's count)."""
        return max(0, self.end - self.start)


async def read_offsets(
    bootstrap: str, topics: Sequence[str], *, group: str | None = None
) -> list[PartitionOffsets]:
    """Offsets of every partition of ``topics`` (missing topics are left out).

    Raises ``OperationalError`` (one line: check TELEMETRY_KAFKA) when the
    broker does not answer.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError, KafkaError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10_000
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        try:
            await consumer.start()
            await admin.start()
            existing = set(await admin.list_topics())
            # Only topics that exist: a metadata request for a missing one may create it.
            wanted = [t for t in topics if t in existing]
            described = await admin.describe_topics(wanted) if wanted else []
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            raise unreachable(bootstrap, exc) from None
        parts = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}
        tps = [TopicPartition(topic, p) for topic in wanted for p in parts.get(topic, ())]
        if not tps:
            return []
        try:
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group) if group else {}
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            raise unreachable(bootstrap, exc) from None
        out = []
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            out.append(PartitionOffsets(tp.topic, tp.partition, starts[tp], ends[tp], offset))
        return out
    finally:
        await admin.close()
        await consumer.stop()
