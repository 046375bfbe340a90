"""``take_weighted`` cuts a Faust stream into batches by count, by bytes or by time.

Runs a real Faust agent (``Agent.test_context``: Faust's own in-process
channel, no broker), so the buffering processor, the passive drainer and the
acknowledgements are Faust's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import faust

from processors.worker import faust_private as fp


def _batches(
    sizes: list[int], *, max_records: int, max_weight: int | Callable[[], int]
) -> list[list[Any]]:
    """The batches an agent took of records of ``sizes`` bytes, and whether each was acked."""

    async def run() -> list[list[Any]]:
        app = faust.App("take-weighted-test", store="memory://")
        got: list[list[Any]] = []
        acked_before: list[bool] = []
        done = asyncio.Event()

        @app.agent(value_type=bytes)
        async def take(stream: Any) -> Any:
            previous: list[Any] = []
            async for batch in fp.take_weighted(stream, max_records, max_weight, 0.2, len):
                # Asking for this batch acknowledged the previous one.
                acked_before.append(all(ev.message.acked for ev in previous))
                got.append([ev.value for ev in batch])
                previous = list(batch)
                if sum(map(len, got)) >= len(sizes):
                    done.set()

        async with take.test_context() as agent:
            for i, size in enumerate(sizes):
                await agent.put(bytes([65 + i]) * size)
            await asyncio.wait_for(done.wait(), 30)
        assert all(acked_before), acked_before
        return got

    return asyncio.run(run())


def test_a_batch_ends_once_its_records_weigh_the_limit() -> None:
    sizes = [3, 3, 3, 10, 1, 1, 2, 5]
    batches = _batches(sizes, max_records=100, max_weight=6)
    values = [v for b in batches for v in b]
    assert [len(v) for v in values] == sizes  # each record once, in order
    assert len(batches) > 1
    for batch in batches[:-1]:
        # Full at its last record, and not one record earlier.
        assert sum(map(len, batch)) >= 6
        assert sum(map(len, batch[:-1])) < 6


def test_a_batch_ends_at_the_record_count_when_records_are_light() -> None:
    sizes = [1] * 7
    batches = _batches(sizes, max_records=2, max_weight=1_000)
    assert [len(v) for b in batches for v in b] == sizes
    assert all(len(b) == 2 for b in batches[:-1])
    assert 1 <= len(batches[-1]) <= 2


def test_a_batch_that_never_fills_is_handed_over_after_within() -> None:
    batches = _batches([1, 1, 1], max_records=100, max_weight=1_000)
    assert [v for b in batches for v in b] == [b"A", b"B", b"C"]


def test_a_callable_bound_is_asked_again_for_each_batch() -> None:
    """The worker's ``BatchBound`` moves between batches; a batch keeps the bound it began with."""
    bounds = iter([6, 2, 100])
    asked: list[int] = []

    def bound() -> int:
        asked.append(next(bounds, 100))
        return asked[-1]

    sizes = [3, 3, 1, 1, 1, 1, 1]
    batches = _batches(sizes, max_records=100, max_weight=bound)
    assert [len(v) for b in batches for v in b] == sizes
    assert [sum(map(len, b)) for b in batches[:2]] == [6, 2]  # cut at 6, then at 2
    assert asked[:2] == [6, 2]
