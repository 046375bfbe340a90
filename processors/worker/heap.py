"""Give freed heap memory back to the system (glibc's ``malloc_trim``).

Folding and publishing decode and merge many hour buckets: thousands of
small blocks freed all over the heap. glibc returns only the top of the heap
by itself, so without a trim the worker's RSS stays at its high-water mark
(``bench/state_size.py``, 1,000 keys x 168 h: 368 MB after publishing; with
a trim every few seconds, 282 MB). A trim walks the heap: tens of ms the
first time, a few ms after that, so the worker trims at most once a second.

Large blocks (a batch record's value is up to 1 MB, a decoded run's columns
more) are another matter: glibc serves a block of 128 KiB or more with its
own ``mmap`` and unmaps it when freed, until the first such free, when it
raises that threshold to the freed size, and from then on large blocks come
from the heap and stay there. ``fix_mmap_threshold`` pins the threshold
(``mallopt``), so every large block goes back to the system when freed:
``bench/state_size.py`` peak 336-349 MB without, 318-319 MB with.

Where ``malloc_trim`` or ``mallopt`` does not exist (musl, macOS) this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from collections.abc import Callable

__all__ = ["MMAP_THRESHOLD", "HeapTrimmer", "fix_mmap_threshold"]

#: Blocks of at least this size are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold for this process; whether the C library took it."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    if libc is None:
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
