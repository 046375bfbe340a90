"""The buffer: bound, order, and wakeups from other threads that are never lost."""

from __future__ import annotations

import asyncio
import threading

import pytest

from collector.buffer import EventBuffer


def test_bound_and_order() -> None:
    buf = EventBuffer(3)
    assert all(buf.put(i) for i in range(3))
    assert not buf.put(3)
    assert buf.take(2) == [0, 1]
    assert buf.take(10) == [2]
    with pytest.raises(ValueError):
        EventBuffer(0)


async def test_put_from_threads_wakes_the_consumer() -> None:
    buf = EventBuffer(1_000_000)
    buf.bind(asyncio.get_running_loop())
    total = 40_000
    got: list[int] = []

    def producer(base: int) -> None:
        for i in range(10_000):
            assert buf.put(base + i)

    threads = [threading.Thread(target=producer, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    async with asyncio.timeout(20):
        while len(got) < total:
            # A long wait: if a wakeup were lost, this would hang until the timeout.
            await buf.wait(30)
            got.extend(buf.take(1000))
    for t in threads:
        t.join()
    assert sorted(got) == list(range(total))


async def test_idle_consumer_is_woken_promptly() -> None:
    buf = EventBuffer(10)
    loop = asyncio.get_running_loop()
    buf.bind(loop)
    for _ in range(50):
        waiter = asyncio.create_task(buf.wait(30))
        await asyncio.sleep(0)  # let it publish idle
        threading.Thread(target=buf.put, args=(1,)).start()
        async with asyncio.timeout(5):
            await waiter
        assert buf.take(10) == [1]
