"""Valid events as their wire bytes, and as ``RequestEvent`` objects only on demand.

``schemas.batch_docs.encode_docs`` validates a batch and encodes the valid events
(exactly ``encode_event`` of the model's event) without building an event
object per event. The HTTP door hands those bytes on; ``ValidEvents`` keeps
them, and stays a ``Sequence[RequestEvent]`` for code that wants objects (a
test's handoff, the embedded store's writer): each is built by the model
from its bytes, with the ``now`` the batch was judged with, so it is the
event the model would have built from the input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import overload

from schemas.batch_docs import EncodedBatch
from schemas.event import RequestEvent

__all__ = ["ValidEvents"]


class ValidEvents(Sequence[RequestEvent]):
    """Valid events of one or more batches judged at ``now``: lines and models, in order."""

    __slots__ = ("lines", "models", "now")

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now
        #: each event's wire bytes (``encode_event``'s)
        self.lines: list[bytes] = []
        #: each event's ``model`` (its records' key, its partition)
        self.models: list[str] = []

    def extend(self, batch: EncodedBatch) -> None:
        self.lines.extend(batch.lines)
        self.models.extend(batch.model)

    def __len__(self) -> int:
        return len(self.lines)

    def _event(self, line: bytes) -> RequestEvent:
        return RequestEvent.model_validate_json(
            line, context={"now": self.now} if self.now else None
        )

    @overload
    def __getitem__(self, k: int) -> RequestEvent: ...

    @overload
    def __getitem__(self, k: slice) -> list[RequestEvent]: ...

    def __getitem__(self, k: int | slice) -> RequestEvent | list[RequestEvent]:
        if isinstance(k, slice):
            return [self._event(line) for line in self.lines[k]]
        return self._event(self.lines[k])

    def __iter__(self) -> Iterator[RequestEvent]:
        return (self._event(line) for line in self.lines)

    def __repr__(self) -> str:
        return f"ValidEvents({len(self)} events)"
