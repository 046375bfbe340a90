"""Open the configured ClickHouse, migrated, for a command or a service."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import stat
from pathlib import Path

from processors.clickhouse import ClickHouse, ReadLimits, connect
from processors.migrate import migrate
from schemas.settings import Settings

__all__ = ["PRIVATE_UMASK", "open_store", "private_dir", "read_limits"]

#: Set process-wide when this process claims the embedded store: see ``_claim``.
PRIVATE_UMASK = 0o077

_locks: list[int] = []
_keep: list[ClickHouse] = []


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) mode 0700, or tighten it to 0700 if it is ours.

    The data directory holds rejected input, the raw events and the control
    socket: no other local user has business reading it. A directory owned
    by someone else is left as it is (we could not change it anyway).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _private_file(path: Path) -> int:
    """Open (create) ``path`` read-write, mode 0600 even when an older run made it 0644."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _claim(data_dir: Path) -> None:
    """Record this process as the owner of the embedded data directory, private to its user.

    chDB admits one process per directory; the pid file lets a second process
    say *who* owns it instead of failing with an engine error.

    The directory is made 0700 and our own files in it 0600. The chDB engine
    creates its files under ``data_dir/clickhouse`` itself, with the process
    umask, from its own threads for as long as the process lives; so claiming
    sets a process-wide ``umask(PRIVATE_UMASK)`` (0077) and never restores it.
    That is deliberate: everything this process creates afterwards, wherever
    it is (an export tree too), is private to its user unless it sets a mode
    itself.
    """
    os.umask(PRIVATE_UMASK)
    private_dir(data_dir)
    fd = _private_file(data_dir / "owner.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return  # the engine open below fails and names the owner
    _locks.append(fd)
    pid_fd = _private_file(data_dir / "owner.pid")
    try:
        os.ftruncate(pid_fd, 0)
        os.write(pid_fd, str(os.getpid()).encode())
    finally:
        os.close(pid_fd)

    def _release() -> None:
        with contextlib.suppress(OSError):
            (data_dir / "owner.pid").unlink()

    atexit.register(_release)


def read_limits(settings: Settings) -> ReadLimits:
    """The bounds on one read-only query, from ``TELEMETRY_SQL_*``."""
    return ReadLimits(
        timeout_s=settings.sql_timeout_s,
        max_memory=settings.sql_max_memory,
        max_result_rows=settings.sql_max_result_rows,
    )


def open_store(
    settings: Settings, *, auto_migrate: bool = True, readonly: bool = False
) -> ClickHouse:
    """The configured ClickHouse; embedded stores are migrated on first use.

    ``readonly`` returns a second, read-only client (after migrating with a
    writable one where needed).
    """
    dsn = settings.clickhouse_dsn
    embedded_default = settings.clickhouse is None
    if embedded_default:
        _claim(settings.data_dir)
    ch = connect(dsn)
    if auto_migrate and (embedded_default or ch.is_embedded):
        migrate(ch, requests_ttl_days=settings.requests_ttl_days)
    if readonly:
        reader = connect(dsn, readonly=True, limits=read_limits(settings))
        _keep.append(ch)  # chDB: keep the engine open while the reader lives
        return reader
    return ch
