"""The seam between the HTTP door and what lies behind it.

The ingest app knows only the ``Handoff`` protocol. ``EmitterHandoff`` puts
events on Kafka through a ``TelemetryEmitter`` (same code path, same no-loss
guarantees as ``emit()``); ``MemoryHandoff`` keeps them in lists (tests, and
the pattern for an embedded, broker-less handoff).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from collector.emitter import TelemetryEmitter
from collector.encoding import dead_letter_value
from schemas.event import RequestEvent

__all__ = ["EmitterHandoff", "Handoff", "MemoryHandoff", "Rejected"]


@dataclass(frozen=True, slots=True)
class Rejected:
    """One input that failed validation: where it was, which field, why, and its bytes."""

    index: int
    field: str
    reason: str
    raw: bytes
    source: str = ""
    received_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))

    def to_dlq(self) -> bytes:
        return dead_letter_value(
            source=self.source,
            index=self.index,
            field=self.field,
            reason=self.reason,
            raw=self.raw,
            received_at=self.received_at,
        )


@runtime_checkable
class Handoff(Protocol):
    async def hand_over(self, events: Sequence[RequestEvent]) -> None:
        """Return once every event is durable (in Kafka, in the spool, or in the store)."""

    async def dead_letter(self, items: Sequence[Rejected]) -> None:
        """Keep rejected inputs with their reasons, with the same durability."""

    def retry_after(self) -> float | None:
        """Seconds to ask clients to wait when the backlog is past its bound, else None."""

    def ready(self) -> bool:
        """True when ``hand_over`` can accept events now."""


class EmitterHandoff:
    """Kafka behind the door, through the emitter."""

    def __init__(self, emitter: TelemetryEmitter) -> None:
        self.emitter = emitter

    async def hand_over(self, events: Sequence[RequestEvent]) -> None:
        await self.emitter.deliver(events)

    async def dead_letter(self, items: Sequence[Rejected]) -> None:
        await self.emitter.dead_letter([r.to_dlq() for r in items])

    def retry_after(self) -> float | None:
        return self.emitter.backlog_retry_after()

    def ready(self) -> bool:
        return self.emitter.connected or self.emitter.spool_writable


class MemoryHandoff:
    """Keeps what it is given, in order; ``busy`` simulates a full backlog."""

    def __init__(self) -> None:
        self.events: list[RequestEvent] = []
        self.rejected: list[Rejected] = []
        self.busy: float | None = None
        self.is_ready = True

    async def hand_over(self, events: Sequence[RequestEvent]) -> None:
        self.events.extend(events)

    async def dead_letter(self, items: Sequence[Rejected]) -> None:
        self.rejected.extend(items)

    def retry_after(self) -> float | None:
        return self.busy

    def ready(self) -> bool:
        return self.is_ready
