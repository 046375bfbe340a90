"""Changelog writes the broker has not acknowledged yet.

Faust buffers table writes (``send_soon``) and promises to flush them before
it commits offsets or gives partitions up. Its buffer's ``flush`` returns
early, though, when no message left within 0.1 s (``ProducerBuffer.
flush_atmost`` in faust-streaming 0.15), which a busy event loop easily
causes. So the worker keeps the futures of its own changelog writes and
waits for them itself: before it acknowledges the events of a batch (so
offsets never move past state that is not in Kafka) and before it lets a
rebalance take partitions away (so no write lands after the new owner
restored).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["PendingWrites"]


class PendingWrites:
    def __init__(self, timeout_s: float = 120.0) -> None:
        self._timeout_s = timeout_s
        self._pending: set[asyncio.Future[Any]] = set()
        self._error: BaseException | None = None

    def add(self, fut: asyncio.Future[Any]) -> None:
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if self._error is None:
            self._error = (
                asyncio.CancelledError("a changelog write was cancelled")
                if fut.cancelled()
                else fut.exception()
            )

    def __len__(self) -> int:
        return len(self._pending)

    async def settled(self) -> None:
        """Return once every write added so far is acknowledged.

        A failed write raises here, even if it failed before the call, and
        in every later call: the caller must not acknowledge events whose
        state did not reach the changelog. Writes that stay unacknowledged
        past the timeout raise ``TimeoutError`` (the broker or the producer
        is stuck; the worker should stop rather than wait forever).
        """
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        while self._pending:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(
                    f"{len(self._pending)} changelog writes not acknowledged "
                    f"within {self._timeout_s:.0f} s"
                )
            await asyncio.wait(list(self._pending), timeout=left)
        if self._error is not None:
            # Kept, not cleared: every waiter (the agent and a revoke) must
            # see it, and this worker must not acknowledge anything again.
            raise self._error
