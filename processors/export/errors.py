"""Errors of the catalog export, all under the project's one root."""

from __future__ import annotations

from schemas.errors import ConfigError, OperationalError, TelemetryError

__all__ = ["ExportConfigError", "ExportError", "PushError", "StaleStatsError"]


class ExportError(TelemetryError):
    """An export could not be published; the previous tree stays in place."""


class StaleStatsError(ExportError):
    """``model_stats_7d`` is older than the allowed age: publishing would present old as fresh.

    Not retriable by the export itself: the pipeline that writes the stats has
    to catch up first.
    """

    def __init__(self, message: str, stale: list[tuple[str, float]]) -> None:
        super().__init__(message)
        #: (model, age in seconds) of every stale model.
        self.stale = stale


class ExportConfigError(ExportError, ConfigError):
    """A flag or variable the export cannot use; the message names it."""


class PushError(ExportError, OperationalError):
    """The catalog did not take a document (after retries when the failure was retriable)."""
