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
    def __init__(self) -> None:
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

        A failed write raises here, even if it failed before the call: the
        caller must not acknowledge events whose state did not reach the
        changelog.
        """
        while self._pending:
            await asyncio.wait(list(self._pending))
        if self._error is not None:
            error, self._error = self._error, None
            raise error
