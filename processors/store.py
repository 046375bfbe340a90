"""Open the configured ClickHouse, migrated, for a command or a service."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
from pathlib import Path

from processors.clickhouse import ClickHouse, connect
from processors.migrate import migrate
from schemas.settings import Settings

__all__ = ["open_store"]

_locks: list[int] = []
_keep: list[ClickHouse] = []


def _claim(data_dir: Path) -> None:
    """Record this process as the owner of the embedded data directory.

    chDB admits one process per directory; the pid file lets a second process
    say *who* owns it instead of failing with an engine error.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "owner.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return  # the engine open below fails and names the owner
    _locks.append(fd)
    (data_dir / "owner.pid").write_text(str(os.getpid()))

    def _release() -> None:
        with contextlib.suppress(OSError):
            (data_dir / "owner.pid").unlink()

    atexit.register(_release)


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
        reader = connect(dsn, readonly=True)
        _keep.append(ch)  # chDB: keep the engine open while the reader lives
        return reader
    return ch
