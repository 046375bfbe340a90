"""Read a run of one partition's messages straight from Kafka, outside Faust.

When the offsets Faust delivers for a partition jump past the offset the
state expects (see processors/worker/fence.py), the events in between
reached the worker's consumer and were dropped by Faust, or were
committed over. Seeking Faust's consumer back does not work reliably:
messages it fetched before the seek keep arriving after it and raise its
read offset again, so the reread is dropped once more. So the worker reads
the missing run itself with a plain aiokafka consumer (no group, no
commits), from the expected offset up to the first delivered one, and
folds it before the rest of the batch.

Offsets the log no longer has (retention) or never had as events
(transaction markers) are simply absent from what comes back: the run
ends at the requested end offset all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["GapReadTimeout", "GapReader"]

log = logging.getLogger(__name__)


class GapReadTimeout(RuntimeError):
    """The broker did not hand back a run of offsets in time."""


class GapReader:
    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(self, partition: int, start: int, end: int) -> list[Any]:
        """The records of ``partition`` with ``start <= offset < end``, in offset order."""
        async with self._lock:
            consumer = await self._ensure()
            tp = TopicPartition(self._topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            out: list[Any] = []
            deadline = time.monotonic() + self._timeout_s
            while True:
                if await consumer.position(tp) >= end:
                    return out
                if time.monotonic() > deadline:
                    raise GapReadTimeout(
                        f"partition {partition}: offsets {start}..{end - 1} not read back "
                        f"within {self._timeout_s:.0f} s"
                    )
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
                for record in batch.get(tp, ()):
                    if start <= record.offset < end:
                        out.append(record)

    async def log_start(self, partition: int) -> int:
        """The partition's first offset the broker still has."""
        async with self._lock:
            consumer = await self._ensure()
            tp = TopicPartition(self._topic, partition)
            return int((await consumer.beginning_offsets([tp]))[tp])

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # below the log start: from the oldest kept
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
