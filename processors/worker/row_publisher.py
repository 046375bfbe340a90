"""Published rows (stats, hourly) to their topics: producer batches, not a Faust message a row.

A publication after a catch-up holds thousands of hourly rows (every hour of
the week of every model). Sent with Faust's ``Topic.send_soon`` each row cost
a ``FutureMessage``, a place in Faust's producer buffer (which the agent
drains before its next batch, and which each commit flushes) and an
``AIOKafkaProducer.send`` call: measured in ``bench/worker_throughput.py``
(what-if ``no-hourly``), the hourly series alone took a quarter of a
week-wide catch-up's time. Here the rows of a topic are grouped by the
partition a keyed producer would pick (``partition_for``, as Faust's
producer does) and appended to one ``BatchBuilder`` per partition, with
the producer Faust already runs (no second connection).

Rows are not state: a publication that fails is simply published again.
``send`` returns once Kafka has acknowledged every batch, and raises
``PublishFailed`` otherwise; the caller marks those rows due again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import KafkaError

from processors.worker.producer_batches import closed_batches
from schemas.event_record import partition_for

__all__ = ["PublishFailed", "RowPublisher"]


class PublishFailed(RuntimeError):
    """Some rows of a publication were not acknowledged (they are published again)."""


class RowPublisher:
    """Keyed rows to a topic through an ``AIOKafkaProducer``, a batch per partition."""

    def __init__(self, producer: Callable[[], Any], *, timeout_s: float = 10.0) -> None:
        #: Returns the running producer (Faust's, once the app has started it).
        self._producer = producer
        self._timeout_s = timeout_s
        self._partitions: dict[str, list[int]] = {}

    async def send(self, topic: str, rows: Sequence[tuple[bytes, bytes]]) -> int:
        """Send ``(key, value)`` rows; the number acknowledged (all), or ``PublishFailed``."""
        if not rows:
            return 0
        producer = self._producer()
        try:
            parts = self._partitions.get(topic)
            if parts is None:
                found = await asyncio.wait_for(producer.partitions_for(topic), self._timeout_s)
                parts = self._partitions[topic] = sorted(found)
            by_part: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in rows:
                by_part.setdefault(parts[partition_for(key, len(parts))], []).append((key, value))
            futures = [
                await asyncio.wait_for(
                    producer.send_batch(batch, topic, partition=part), self._timeout_s
                )
                for part, items in by_part.items()
                for batch, _ in closed_batches(producer, items)
            ]
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            self._partitions.pop(topic, None)  # looked up again next time
            why = f"{len(rows)} rows to {topic}: {type(exc).__name__}: {exc}"
            raise PublishFailed(why) from exc
        return len(rows)
