"""The in-memory buffer between ``emit()`` and the background task.

A ``collections.deque`` (its ``append``/``popleft`` are atomic under the GIL, so
any thread may put) with a bound, and a wakeup that costs the request path
nothing while the consumer is busy: the consumer publishes ``idle`` before it
re-checks the deque and sleeps; a producer wakes it (``call_soon_threadsafe``)
only when it saw ``idle``. Put appends *then* reads ``idle``; the consumer sets
``idle`` *then* re-reads the deque: one of the two always sees the other, so a
wakeup is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

__all__ = ["EventBuffer"]


class EventBuffer:
    """Bounded multi-producer, single-consumer queue of raw events."""

    __slots__ = ("_items", "_loop", "_waiter", "idle", "maxlen")

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"buffer size must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self._items: deque[Any] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.idle = False

    def __len__(self) -> int:
        return len(self._items)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def put(self, item: Any) -> bool:
        """Append unless full; False when full (the caller spools). Any thread."""
        items = self._items
        if len(items) >= self.maxlen:
            return False
        items.append(item)
        if self.idle:
            self.idle = False
            loop = self._loop
            if loop is not None:
                # RuntimeError: loop closed; the close path drains the buffer.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._wake)
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake(self) -> None:
        """Wake the consumer from the loop thread (used by close())."""
        self.idle = False
        self._wake()

    async def wait(self, timeout: float) -> None:
        """Consumer side: return when items are there, ``wake()`` is called, or on timeout."""
        if self._items:
            return
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self.idle = True
        if self._items:  # re-check after publishing idle (see module doc)
            self.idle = False
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except TimeoutError:
            pass
        finally:
            self.idle = False
            self._waiter = None

    def take(self, limit: int) -> list[Any]:
        """Up to ``limit`` items, oldest first. Consumer side."""
        items = self._items
        n = min(limit, len(items))
        popleft = items.popleft
        return [popleft() for _ in range(n)]
