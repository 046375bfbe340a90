"""Publish a whole export tree at once: build it aside, then swap it in with one rename.

The new tree is written into a hidden sibling of ``out`` (same filesystem, so
renames are atomic), flushed to disk, and then exchanged with ``out`` by
``renameat2(RENAME_EXCHANGE)``: at every instant ``out`` is either the whole
previous tree or the whole new one. A reader never sees a partial tree, and a
process killed at any point leaves the previous export as it was; the next
export removes what the dead one left behind.

Where the exchange is not supported (not Linux, or a filesystem without it)
the swap is two renames, ``out`` → ``.out.old-*`` then the new tree → ``out``:
still never a partial tree, but for a moment no tree; a crash in that moment
is repaired by the next export, which renames the old tree back first.

A lock file beside ``out`` keeps two exports from writing the same tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from processors.export.errors import ExportError

__all__ = ["PAUSE_AFTER_ENV", "PAUSE_MARKER_ENV", "TreeWriter", "recover"]

#: Test hook: after this many files, create the marker file and wait to be killed.
PAUSE_AFTER_ENV = "TELEMETRY_TEST_EXPORT_PAUSE_AFTER"
PAUSE_MARKER_ENV = "TELEMETRY_TEST_EXPORT_PAUSE_MARKER"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


#: The tree is made to be published (a web server, a sync job), so its modes are
#: explicit: a process that owns the embedded store runs with umask 077
#: (docs/security.md). A tree inside the data directory stays private through
#: the directory's own 0700.
_DIR_MODE = 0o755
_FILE_MODE = 0o644


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def _old_prefix(out: Path) -> str:
    return f".{out.name}.old-"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the OS or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(out: Path) -> list[str]:
    """Repair what a killed export left beside ``out``; return what was done.

    Call with the lock held. Restores the previous tree if a fallback swap
    died between its two renames, and removes unfinished temporary trees.
    """
    done: list[str] = []
    parent = out.parent
    if not parent.is_dir():
        return done
    olds = sorted(p for p in parent.iterdir() if p.name.startswith(_old_prefix(out)))
    if not out.exists() and olds:
        os.rename(olds[-1], out)
        done.append(f"restored the previous tree from {olds[-1].name}")
        olds = olds[:-1]
    for p in olds + [p for p in parent.iterdir() if p.name.startswith(_tmp_prefix(out))]:
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p.name}, left by an interrupted export")
    return done


class TreeWriter:
    """``with TreeWriter(out) as w: w.write("a/b.json", data); w.commit()``.

    Leaving the block without ``commit()`` (an exception) removes the
    temporary tree and leaves ``out`` untouched.
    """

    def __init__(self, out: Path, *, fsync: bool = True) -> None:
        self.out = Path(out).absolute()
        self.fsync = fsync
        self.files = 0
        self.bytes = 0
        self.recovered: list[str] = []
        self._tmp: Path | None = None
        self._lock_fd: int | None = None
        self._dirs: set[Path] = set()
        pause = os.environ.get(PAUSE_AFTER_ENV)
        self._pause_after = int(pause) if pause else None

    def __enter__(self) -> TreeWriter:
        parent = self.out.parent
        parent.mkdir(parents=True, exist_ok=True)
        if self.out.exists() and not self.out.is_dir():
            raise ExportError(f"--out {self.out}: exists and is not a directory")
        lock_path = parent / f".{self.out.name}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ExportError(
                f"--out {self.out}: another export is writing this tree right now"
            ) from None
        self._lock_fd = fd
        self.recovered = recover(self.out)
        self._tmp = parent / f"{_tmp_prefix(self.out)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        os.chmod(self._tmp, _DIR_MODE)
        self._dirs = {self._tmp}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def write(self, rel: str, data: bytes) -> None:
        """Write one file of the new tree; ``rel`` is a relative POSIX path."""
        if self._tmp is None:
            raise ExportError("TreeWriter.write outside its with-block")
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ExportError(f"refusing to write {rel!r}: not a plain path inside the tree")
        path = self._tmp.joinpath(*parts)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            for p in (path.parent, *path.parent.parents):
                if p == self._tmp:
                    break
                if p not in self._dirs:
                    os.chmod(p, _DIR_MODE)
                    self._dirs.add(p)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        os.fchmod(fd, _FILE_MODE)  # whatever the umask: see _FILE_MODE
        with open(fd, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        self.files += 1
        self.bytes += len(data)
        if self._pause_after is not None and self.files == self._pause_after:
            self._pause()

    def _pause(self) -> None:
        marker = os.environ.get(PAUSE_MARKER_ENV)
        if marker:
            Path(marker).write_text(str(self._tmp))
        while True:  # the test kills us here, half-way through the tree
            time.sleep(0.05)

    def commit(self) -> None:
        """Swap the new tree in. After this returns, ``out`` is the new tree."""
        if self._tmp is None:
            raise ExportError("TreeWriter.commit outside its with-block")
        tmp = self._tmp
        if self.fsync:
            for d in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
                _fsync_dir(d)
        if not self.out.exists():
            os.rename(tmp, self.out)
            self._tmp = None
        elif _exchange(tmp, self.out):
            pass  # tmp now holds the previous tree; __exit__ removes it
        else:
            old = self.out.parent / f"{_old_prefix(self.out)}{uuid.uuid4().hex[:8]}"
            os.rename(self.out, old)
            os.rename(tmp, self.out)
            self._tmp = old
        if self.fsync:
            with contextlib.suppress(OSError):
                _fsync_dir(self.out.parent)
