"""The tables' changelog writes of a fold, sent as one producer batch per changelog partition.

A week-wide batch writes back thousands of buckets. Through Faust's
``send_soon`` each write was a ``FutureMessage`` in Faust's producer buffer,
drained one ``AIOKafkaProducer.send`` per loop turn while the agent waited
(rule 3), then a RocksDB write of the persisted offset per message: the
what-if ``no-changelog`` of ``bench/worker_throughput.py`` put that at about
half of a week-wide catch-up. Here ``TrackedTable.send_changelog`` only
holds the write; ``flush`` appends each partition's writes to aiokafka
``BatchBuilder``s on the producer Faust runs, in the order they were made,
and ships them. Each batch's future goes to ``PendingWrites`` (the agent
still acknowledges nothing before its writes are acknowledged), and once
acknowledged the table's store keeps the batch's last offset as the
changelog offset it holds, as Faust's ``_on_changelog_sent`` does per
message. aiokafka sends one batch of a partition at a time, so the
changelog keeps the order of the writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from faust.types import TP

from processors.worker import faust_private as fp
from processors.worker.pending_writes import PendingWrites
from processors.worker.producer_batches import closed_batches

__all__ = ["ChangelogOutbox", "HeldWrite"]


class _Partition:
    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


class HeldWrite:
    """What ``send_changelog`` returns for a held write: Faust reads ``message.partition``."""

    __slots__ = ("message",)

    def __init__(self, partition: int) -> None:
        self.message = _Partition(partition)


class ChangelogOutbox:
    def __init__(self, producer: Callable[[], Any], writes: PendingWrites) -> None:
        #: Returns the running producer (Faust's, once the app has started it).
        self._producer = producer
        self._writes = writes
        #: (table, changelog partition) -> [(key, value or None for a tombstone)], in order
        self._held: dict[tuple[Any, int], list[tuple[bytes, bytes | None]]] = {}
        #: One flush at a time: a flush waiting on the producer must not be
        #: overtaken by a later one (a timer's, then the agent's), or a
        #: partition's writes would reach the changelog out of order.
        self._shipping = asyncio.Lock()

    def __len__(self) -> int:
        return sum(map(len, self._held.values()))

    def put(self, table: Any, partition: int, key: bytes, value: bytes | None) -> HeldWrite:
        held = self._held.get((table, partition))
        if held is None:
            self._held[(table, partition)] = [(key, value)]
        else:
            held.append((key, value))
        return HeldWrite(partition)

    def put_many(self, table: Any, partition: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        """``put`` of each (key, value), in order: a run's bucket records at once."""
        self._held.setdefault((table, partition), []).extend(items)

    async def flush(self) -> None:
        """Ship every held write; their futures are in ``PendingWrites`` once this returns."""
        async with self._shipping:
            await self._flush()

    async def _flush(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, {}
        producer = self._producer()
        for (table, partition), items in held.items():
            topic = table.changelog_topic.get_topic_name()
            for batch, count in closed_batches(producer, items):
                fut = await producer.send_batch(batch, topic, partition=partition)
                self._writes.add(fut)
                fut.add_done_callback(self._persist(table, TP(topic, partition), count))

    @staticmethod
    def _persist(table: Any, tp: TP, count: int) -> Callable[[asyncio.Future[Any]], None]:
        """Once acknowledged, the store holds the changelog up to the batch's last record."""

        def persisted(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                return  # PendingWrites keeps the error: nothing is acknowledged again
            fp.table_store(table).set_persisted_offset(tp, done.result().offset + count - 1)

        return persisted
