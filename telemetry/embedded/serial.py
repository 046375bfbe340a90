"""One chDB handle shared by the HTTP door, the refresh loop, exports and the control socket.

chDB is one engine per process and its handle is not meant for concurrent
use, so every access goes through one lock, on a worker thread, off the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from processors.clickhouse import ClickHouse

__all__ = ["SerialStore"]

T = TypeVar("T")


class SerialStore:
    def __init__(self, ch: ClickHouse, reader: ClickHouse | None = None) -> None:
        self.ch = ch
        self.reader = reader or ch
        self._lock = threading.Lock()
        self.waiting = 0

    def call(self, fn: Callable[..., T], *args: Any, read: bool = False) -> T:
        with self._lock:
            return fn(self.reader if read else self.ch, *args)

    async def run(self, fn: Callable[..., T], *args: Any, read: bool = False) -> T:
        """``read=True`` runs ``fn`` on the read-only client."""
        self.waiting += 1
        try:
            return await asyncio.to_thread(lambda: self.call(fn, *args, read=read))
        finally:
            self.waiting -= 1
