"""The outbox keeps a partition's writes in the order they were made, held one by
one (``put``) or a run at a time (``put_many``). The broker side is in
tests/integration/test_changelog_outbox.py."""

from __future__ import annotations

import asyncio
from typing import Any

from processors.worker.changelog_outbox import ChangelogOutbox
from processors.worker.pending_writes import PendingWrites


class _Batch:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def append(self, *, key: bytes, value: bytes | None, timestamp: None) -> object:
        self.keys.append(key)
        return object()

    def close(self) -> None:
        pass


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[int, list[bytes]]] = []

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.sent.append((partition, batch.keys))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        return fut  # never acknowledged: nothing here reads the store


class _Topic:
    def get_topic_name(self) -> str:
        return "t-changelog"


class _Table:
    changelog_topic = _Topic()


def test_put_and_put_many_keep_the_order_of_the_writes() -> None:
    producer = _Producer()
    outbox = ChangelogOutbox(lambda: producer, PendingWrites(timeout_s=1.0))
    table = _Table()
    outbox.put(table, 0, b"a", b"1")
    outbox.put_many(table, 0, [(b"b", b"2"), (b"c", b"3")])
    outbox.put(table, 1, b"x", None)
    outbox.put(table, 0, b"d", b"4")
    assert len(outbox) == 5
    asyncio.run(outbox.flush())
    assert producer.sent == [(0, [b"a", b"b", b"c", b"d"]), (1, [b"x"])]
    assert len(outbox) == 0
