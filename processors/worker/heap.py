"""Give freed heap memory back to the system (glibc's ``malloc_trim``).

Folding and publishing decode and merge many hour buckets: thousands of
small blocks freed all over the heap. glibc returns only the top of the heap
by itself, so without a trim the worker's RSS stays at its high-water mark
(``bench/state_size.py``, 1,000 keys x 168 h: 368 MB after publishing; with
a trim every few seconds, 282 MB). A trim walks the heap: tens of ms the
first time, a few ms after that, so the worker trims at most once a second.

Where ``malloc_trim`` does not exist (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from collections.abc import Callable

__all__ = ["HeapTrimmer"]


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    def __init__(self, every_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._trim = _malloc_trim()
        self._every_s = every_s
        self._clock = clock
        self._last = -math.inf

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe(self) -> bool:
        """Trim unless one ran less than ``every_s`` ago; whether it trimmed."""
        if self._trim is None:
            return False
        now = self._clock()
        if now - self._last < self._every_s:
            return False
        self._last = now
        self._trim(0)
        return True
