"""The HTTP door's handoff in embedded mode: accepted events go straight into chDB.

An answer is sent only after the insert returned, i.e. after the rows are in
files on disk: a SIGKILL of the process loses nothing it has acknowledged
(an insert that is interrupted is not acknowledged, and the gateway retries;
the dedup by ``event_id`` absorbs the retry).
"""

from __future__ import annotations

from collections.abc import Sequence

from collector.handoff import Rejected as HttpRejected
from processors.sinks.rejected import Rejected, write_rejected
from processors.sinks.requests import write_events
from schemas.event import RequestEvent
from telemetry.service.serial import SerialStore

__all__ = ["StoreHandoff"]

#: Requests waiting for the store beyond this get 429 with Retry-After.
MAX_WAITING = 64


class StoreHandoff:
    def __init__(self, store: SerialStore) -> None:
        self.store = store
        self.accepted = 0
        self.stored = 0

    async def hand_over(self, events: Sequence[RequestEvent]) -> None:
        stored = await self.store.run(write_events, list(events))
        self.accepted += len(events)
        self.stored += stored

    async def dead_letter(self, items: Sequence[HttpRejected]) -> None:
        rows = [
            Rejected(r.source or "http", f"index {r.index}", r.field, r.reason, r.raw)
            for r in items
        ]
        await self.store.run(write_rejected, rows)

    def retry_after(self) -> float | None:
        return 1.0 if self.store.waiting > MAX_WAITING else None

    def ready(self) -> bool:
        return True
