"""Bytes in, events out, and back: the hot path of every stage.

``decode_event`` never returns None: it returns a valid event or raises
``InvalidEvent`` naming the field and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.errors import InvalidEvent
from schemas.event import RequestEvent

__all__ = [
    "MAX_EVENT_BYTES",
    "decode_event",
    "encode_event",
    "iter_ndjson",
    "validate_event",
]

#: A single event larger than this is rejected before parsing (events carry no text).
MAX_EVENT_BYTES = 64 * 1024

_DUMP_OPTS = orjson.OPT_UTC_Z


def _rule_from_pydantic(exc: ValidationError) -> InvalidEvent:
    err = exc.errors(include_url=False)[0]
    original = (err.get("ctx") or {}).get("error")
    field_name = getattr(original, "field", None)
    if field_name is not None:
        return InvalidEvent(field_name, str(getattr(original, "rule", "")))
    loc = ".".join(str(p) for p in err["loc"]) or "$"
    msg = err["msg"]
    if err["type"] == "missing":
        msg = "is required"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return InvalidEvent(loc, msg)


def validate_event(data: Any, *, now: datetime | None = None) -> RequestEvent:
    """Validate a decoded JSON value (should be an object) into an event."""
    if isinstance(data, RequestEvent):
        return data
    if not isinstance(data, dict):
        raise InvalidEvent("$", f"must be a JSON object, got {type(data).__name__}")
    try:
        return RequestEvent.model_validate(data, context={"now": now} if now else None)
    except ValidationError as exc:
        raise _rule_from_pydantic(exc) from None


def decode_event(
    raw: bytes | bytearray | memoryview | str, *, now: datetime | None = None
) -> RequestEvent:
    """Parse one JSON document (bytes) into a valid event, or raise ``InvalidEvent``."""
    if isinstance(raw, str):
        raw = raw.encode()  # the limit is in bytes, as on the wire
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("$", f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} byte limit")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("$", f"malformed JSON ({exc.msg} at char {exc.pos})") from None
    return validate_event(data, now=now)


def encode_event(event: RequestEvent) -> bytes:
    """Compact JSON bytes with the contract's field names; ts in UTC with a Z."""
    return orjson.dumps(event.model_dump(), option=_DUMP_OPTS)


def iter_ndjson(
    chunks: Iterable[bytes], *, max_line: int = MAX_EVENT_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Split a byte stream into (line_number, line) in bounded memory.

    Blank lines are skipped but counted, so numbers match an editor's. A line
    longer than ``max_line`` is cut to ``max_line + 1`` bytes (enough for
    ``decode_event`` to reject it as oversized) and the rest is skipped
    without being held in memory.
    """
    lineno = 0
    pending = bytearray()
    overflow = False
    blank = True  # no byte but whitespace so far, including any cut-off part
    for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if blank and piece.strip():
                blank = False
            if not overflow:
                room = max_line + 1 - len(pending)
                pending += piece[:room]
                overflow = len(piece) > room
            if nl < 0:
                break
            lineno += 1
            if not blank:
                yield lineno, bytes(pending)
            pending.clear()
            overflow = False
            blank = True
            start = nl + 1
    if not blank:
        yield lineno + 1, bytes(pending)
