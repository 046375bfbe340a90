"""The chDB handles shared by the HTTP door, the refresh loop, exports and the control socket.

chDB is one engine per process; each client is a handle of its own, and a
handle is not meant for concurrent use. So the writer (inserts, refreshes,
exports) has one lock, and reads of other people's SQL (the control socket)
take one of a few read-only handles from a pool, on threads of their own (so
that reads waiting for a handle never take the threads the writer needs).
Nothing runs on the event loop. The engine runs queries of different handles
side by side, so a slow read holds back neither an insert nor another shell's
`telemetry stats`.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from processors.clickhouse import ClickHouse
from schemas.errors import OperationalError

__all__ = ["SerialStore", "StoreClosing"]

T = TypeVar("T")


class StoreClosing(OperationalError):
    """The store is being closed: no new read starts."""


class SerialStore:
    def __init__(self, ch: ClickHouse, readers: Sequence[ClickHouse] = ()) -> None:
        self.ch = ch
        self._lock = threading.Lock()
        self._readers: queue.SimpleQueue[ClickHouse] | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        if readers:
            self._readers = queue.SimpleQueue()
            for reader in readers:
                self._readers.put(reader)
            self._read_pool = ThreadPoolExecutor(len(readers), thread_name_prefix="reader")
        #: writer calls waiting or running (the HTTP door's backpressure)
        self.waiting = 0
        self._closing = threading.Event()
        self._count_lock = threading.Lock()
        self._reads_running = 0

    def call(self, fn: Callable[..., T], *args: Any, read: bool = False) -> T:
        if not read or self._readers is None:
            with self._lock:
                return fn(self.ch, *args)
        reader = self._readers.get()
        try:
            if self._closing.is_set():
                raise StoreClosing("the store is closing; no new read starts")
            with self._count_lock:
                self._reads_running += 1
            try:
                return fn(reader, *args)
            finally:
                with self._count_lock:
                    self._reads_running -= 1
        finally:
            self._readers.put(reader)

    async def run(self, fn: Callable[..., T], *args: Any, read: bool = False) -> T:
        """``read=True`` runs ``fn`` on a free read-only handle (the writer if there are none)."""
        if read:
            call = functools.partial(self.call, fn, *args, read=True)
            return await asyncio.get_running_loop().run_in_executor(self._read_pool, call)
        self.waiting += 1
        try:
            return await asyncio.to_thread(self.call, fn, *args)
        finally:
            self.waiting -= 1

    @property
    def reads_running(self) -> int:
        """Reads on the read handles right now (a stopping owner kills them until 0)."""
        return self._reads_running

    def close(self) -> None:
        """No read starts from now on: queued ones are cancelled, later ones refused.

        Reads already running go on until they end or are killed.
        """
        self._closing.set()
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=False, cancel_futures=True)
