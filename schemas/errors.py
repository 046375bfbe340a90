"""One error root for the whole pipeline.

Errors carry their retry policy as a class attribute (the aiokafka habit), so a
caller asks the error whether to retry instead of keeping lists of classes.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidEvent",
    "OperationalError",
    "TelemetryError",
]


class TelemetryError(Exception):
    """Root of every error this project raises on purpose."""

    retriable: bool = False


class ConfigError(TelemetryError):
    """A setting the code cannot use; the message names the flag or variable."""


class OperationalError(TelemetryError):
    """A service we depend on failed (broker, ClickHouse, disk); retrying may help."""

    retriable = True


class InvalidEvent(TelemetryError):
    """An event broke a rule of the contract. Never retriable: the same bytes fail again.

    ``field`` names the offending field (``"$"`` for the document itself) and
    ``rule`` says which rule it broke, so a gateway engineer can fix the emitter
    from the message alone.
    """

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.rule}"
