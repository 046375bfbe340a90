"""Errors of the collector package, all under one root (``CollectorError``).

Each carries its retry policy as a class attribute, like ``schemas.errors``.
"""

from __future__ import annotations

from schemas.errors import ConfigError, OperationalError, TelemetryError

__all__ = ["BacklogFull", "CollectorError", "SpoolInUse", "SpoolUnavailable"]


class CollectorError(TelemetryError):
    """Root of the errors raised by ``collector``."""


class SpoolInUse(CollectorError, ConfigError):
    """Another process holds the spool directory (one emitter per directory)."""


class SpoolUnavailable(CollectorError, OperationalError):
    """The spool cannot be written (disk full, permissions, closed)."""


class BacklogFull(CollectorError, OperationalError):
    """Too much is waiting to be handed over; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
