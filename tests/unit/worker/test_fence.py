"""The rebalance fence and the wait for changelog writes: the worker's rules, without Faust."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from processors.worker.fence import find_holes, split_by_fence
from processors.worker.pending_writes import PendingWrites


@dataclass
class Msg:
    partition: int
    offset: int
    generation_id: int | None


@dataclass
class Ev:
    message: Msg


def test_only_this_generations_events_of_held_partitions_are_folded() -> None:
    batch = [
        Ev(Msg(0, 10, 4)),  # fetched before the last rebalance
        Ev(Msg(1, 10, 5)),
        Ev(Msg(2, 10, 5)),  # partition 2 went to another worker
        Ev(Msg(0, 11, 5)),
        Ev(Msg(1, 11, None)),
        Ev(Msg(1, 12, 5)),
    ]
    live, fenced = split_by_fence(batch, generation=5, partitions={0, 1})
    assert [(e.message.partition, e.message.offset) for e in live] == [(1, 10), (0, 11), (1, 12)]
    assert [(e.message.partition, e.message.offset) for e in fenced] == [
        (0, 10),
        (2, 10),
        (1, 11),
    ]
    assert split_by_fence(batch, generation=6, partitions={0, 1, 2}) == ([], batch)


def test_settled_waits_for_every_write_including_ones_added_meanwhile() -> None:
    async def go() -> list[str]:
        loop = asyncio.get_running_loop()
        writes = PendingWrites()
        order: list[str] = []
        first: asyncio.Future[int] = loop.create_future()
        late: asyncio.Future[int] = loop.create_future()
        writes.add(first)

        async def broker() -> None:
            await asyncio.sleep(0)
            writes.add(late)  # a timer wrote while the agent was waiting
            first.set_result(1)
            await asyncio.sleep(0)
            order.append("late acknowledged")
            late.set_result(2)

        task = asyncio.create_task(broker())
        await writes.settled()
        order.append("settled")
        await task
        assert len(writes) == 0
        return order

    assert asyncio.run(go()) == ["late acknowledged", "settled"]


def test_a_failed_write_is_raised_even_if_it_failed_before_the_wait() -> None:
    async def go() -> None:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        writes = PendingWrites()
        writes.add(fut)
        fut.set_exception(RuntimeError("broker said no"))
        await asyncio.sleep(0)  # the failure is seen before anyone waits
        assert len(writes) == 0
        for _ in range(2):  # every waiter sees it, not only the first
            with pytest.raises(RuntimeError, match="broker said no"):
                await writes.settled()

    asyncio.run(go())


def test_writes_that_never_settle_raise_instead_of_waiting_forever() -> None:
    async def go() -> None:
        writes = PendingWrites(timeout_s=0.05)
        writes.add(asyncio.get_running_loop().create_future())
        with pytest.raises(TimeoutError, match="1 changelog writes not acknowledged"):
            await writes.settled()

    asyncio.run(go())


def test_holes_are_the_runs_missing_before_delivered_offsets() -> None:
    # Nothing stored yet: whatever comes first starts the partition.
    assert find_holes([7, 8, 9], None) == ([], 10)
    # Redeliveries below the expected offset are not holes.
    assert find_holes([3, 4, 5, 6], 5) == ([], 7)
    # Faust skipped 7..289: that run is read from Kafka.
    assert find_holes([5, 6, 290, 291], 5) == ([(7, 290)], 292)
    assert find_holes([290, 291], 5) == ([(5, 290)], 292)
    # Several holes in one batch, and a redelivery among them.
    assert find_holes([2, 10, 11, 20], 5) == ([(5, 10), (12, 20)], 21)
    assert find_holes([], 5) == ([], 5)
