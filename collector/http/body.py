"""From request bytes to events: content types, encodings, bounds, per-event validation.

Pure functions, no I/O: the app reads the body, these decide what it holds.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import zstandard
from pydantic import TypeAdapter, ValidationError

from collector.encoding import raw_bytes
from collector.handoff import Rejected
from schemas.codec import MAX_EVENT_BYTES, iter_ndjson, validate_event
from schemas.errors import InvalidEvent
from schemas.event import RequestEvent

__all__ = [
    "CONTENT_TYPES",
    "ENCODINGS",
    "BodyError",
    "Parsed",
    "content_kind",
    "decompress",
    "parse_events",
]

#: media type -> body kind
CONTENT_TYPES = {"application/json": "json", "application/x-ndjson": "ndjson"}
ENCODINGS = ("identity", "gzip", "zstd")
#: One call validates a whole batch (the same model, so the same rules as validate_event).
_BATCH: TypeAdapter[list[RequestEvent]] = TypeAdapter(list[RequestEvent])


class BodyError(Exception):
    """The request as a whole cannot be used; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def content_kind(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind = CONTENT_TYPES.get(media)
    if kind is None:
        raise BodyError(
            415,
            f"Content-Type must be application/json (a JSON array) or "
            f"application/x-ndjson, got {media or 'none'!r}",
        )
    return kind


def content_encoding(header: str | None) -> str:
    enc = (header or "identity").strip().lower() or "identity"
    if enc not in ENCODINGS:
        raise BodyError(415, f"Content-Encoding must be gzip, zstd or identity, got {enc!r}")
    return enc


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Decode the body, refusing (413) output past ``limit`` bytes: no zip bombs."""
    if encoding == "identity":
        return body
    if encoding == "gzip":
        return _gunzip(body, limit)
    return _unzstd(body, limit)


def _too_big(limit: int) -> BodyError:
    return BodyError(413, f"decompressed body is over the {limit} byte limit")


def _gunzip(body: bytes, limit: int) -> bytes:
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            d = zlib.decompressobj(wbits=31)
            chunk = d.decompress(data, limit - size + 1)
            size += len(chunk)
            if size > limit or d.unconsumed_tail:
                raise _too_big(limit)
            out.append(chunk)
            if not d.eof:
                raise BodyError(400, "gzip body is truncated")
            data = d.unused_data  # concatenated gzip members
    except zlib.error as exc:
        raise BodyError(400, f"gzip body is corrupt: {exc}") from None
    return b"".join(out)


def _unzstd(body: bytes, limit: int) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(body), read_across_frames=True
        )
        out = reader.read(limit + 1)
        if len(out) > limit:
            raise _too_big(limit)
        # Output is bounded now; a second pass says whether the last frame was complete.
        d = zstandard.ZstdDecompressor().decompressobj()
        d.decompress(body)
        if not d.eof:
            raise BodyError(400, "zstd body is truncated")
    except zstandard.ZstdError as exc:
        raise BodyError(400, f"zstd body is corrupt: {exc}") from None
    return bytes(out)


@dataclass
class Parsed:
    events: list[RequestEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: for NDJSON, the 1-based line of each rejected item (same order as ``rejected``)
    lines: list[int | None] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.events) + len(self.rejected)


def _validate_all(
    items: list[Any],
    indices: list[int],
    raws: list[bytes | None],
    parsed: Parsed,
    *,
    source: str,
    now: datetime,
    lines: list[int | None],
) -> None:
    """Validate decoded items: the whole list in one call (fast path), else one by one."""
    try:
        parsed.events.extend(_BATCH.validate_python(items, context={"now": now}))
        return
    except ValidationError:
        pass  # at least one is invalid: find which, with the contract's own messages
    for item, index, raw, line in zip(items, indices, raws, lines, strict=True):
        try:
            parsed.events.append(validate_event(item, now=now))
        except InvalidEvent as exc:
            parsed.rejected.append(
                Rejected(index, exc.field, exc.reason, raw or raw_bytes(item), source, now)
            )
            parsed.lines.append(line)


def parse_events(body: bytes, kind: str, *, source: str, now: datetime | None = None) -> Parsed:
    """Validate each event on its own; a bad one never holds back the good ones.

    Accepted events keep their order; ``rejected`` is in input order too.
    """
    now = now or datetime.now(UTC)
    parsed = Parsed()
    if kind == "json":
        try:
            doc: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BodyError(400, f"malformed JSON ({exc.msg} at char {exc.pos})") from None
        if isinstance(doc, dict):
            doc = [doc]  # a single event object is a batch of one
        if not isinstance(doc, list):
            raise BodyError(400, "a JSON body must be an array of event objects")
        n = len(doc)
        _validate_all(
            doc, list(range(n)), [None] * n, parsed, source=source, now=now, lines=[None] * n
        )
        return parsed
    items: list[Any] = []
    indices: list[int] = []
    raws: list[bytes | None] = []
    lines: list[int | None] = []
    for index, (lineno, line) in enumerate(iter_ndjson(iter((body,)))):
        try:
            if len(line) > MAX_EVENT_BYTES:
                raise InvalidEvent(
                    "$", f"event is {len(line)} bytes, over the {MAX_EVENT_BYTES} byte limit"
                )
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidEvent("$", f"malformed JSON ({exc.msg} at char {exc.pos})") from None
        except InvalidEvent as exc:
            # Decoding failed: reject now, in order with the ones validated below.
            parsed.rejected.append(
                Rejected(index, exc.field, exc.reason, line[:MAX_EVENT_BYTES], source, now)
            )
            parsed.lines.append(lineno)
            continue
        items.append(item)
        indices.append(index)
        raws.append(line)
        lines.append(lineno)
    _validate_all(items, indices, raws, parsed, source=source, now=now, lines=lines)
    if parsed.rejected:
        order = sorted(range(len(parsed.rejected)), key=lambda i: parsed.rejected[i].index)
        parsed.rejected = [parsed.rejected[i] for i in order]
        parsed.lines = [parsed.lines[i] for i in order]
    return parsed
