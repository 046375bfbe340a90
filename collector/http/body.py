"""From request bytes to events: content types, encodings, bounds, batch validation.

Pure functions, no I/O: the app reads the body, these decide what it holds.
"""

from __future__ import annotations

import re
import zlib
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import zstandard

from collector.encoding import raw_bytes
from collector.handoff import Rejected
from schemas.batch import EncodedBatch, encode_array_fast, encode_lines_fast
from schemas.batch_docs import encode_docs
from schemas.codec import MAX_EVENT_BYTES
from schemas.errors import InvalidEvent
from schemas.valid_events import ValidEvents

__all__ = [
    "CONTENT_TYPES",
    "ENCODINGS",
    "MAX_ITEMS",
    "MAX_REJECTS_KEPT",
    "BodyError",
    "EventBatch",
    "Parsed",
    "Unusable",
    "content_kind",
    "decompress",
    "media_of",
    "parse_events",
]

#: media type -> body kind
CONTENT_TYPES = {"application/json": "json", "application/x-ndjson": "ndjson"}
ENCODINGS = ("identity", "gzip", "zstd")
#: Rejected items kept per request (dead-lettered, listed in the answer); the rest are
#: only counted. Each kept one is a stored row and an entry in the answer.
MAX_REJECTS_KEPT = 100
#: Items per request (array elements, NDJSON lines): past it the answer is 413. Bytes
#: alone do not bound the work: 64 MiB of ``1\n`` is 32 million lines.
MAX_ITEMS = 100_000
#: Items per call of the batch validator.
_CHUNK = 5_000


class BodyError(Exception):
    """The request as a whole cannot be used; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_of(content_type: str | None) -> str:
    """The media type of a Content-Type header, without its parameters, lower case."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def content_kind(content_type: str | None) -> str:
    media = media_of(content_type)
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
    """Decode the body, refusing (413) output past ``limit`` bytes: no zip bombs.

    Both decoders take time linear in the body, however many members or frames
    it is made of: a body is sent by a client we do not trust.
    """
    if encoding == "identity":
        return body
    if encoding == "gzip":
        return _gunzip(body, limit)
    return _unzstd(body, limit)


def _too_big(limit: int) -> BodyError:
    return BodyError(413, f"decompressed body is over the {limit} byte limit")


#: Input handed to zlib per call for one gzip member: it starts small and doubles.
#: zlib copies what follows the end of a member (``unused_data``); feeding it the
#: whole rest of the body would copy that rest once per member, quadratic time for
#: a body of many small members. Fed like this, a member's copy is at most about
#: its own size plus ``_GZIP_FEED_MIN``.
_GZIP_FEED_MIN = 256
_GZIP_FEED_MAX = 1 << 20


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member in turn (RFC 1952 allows them concatenated)."""
    view = memoryview(body)
    out: list[bytes] = []
    size = 0
    pos = 0
    try:
        while pos < len(view):
            pos, size = _gunzip_member(view, pos, out, size, limit)
    except zlib.error as exc:
        raise BodyError(400, f"gzip body is corrupt: {exc}") from None
    return b"".join(out)


def _gunzip_member(
    view: memoryview, pos: int, out: list[bytes], size: int, limit: int
) -> tuple[int, int]:
    """Decode the member starting at ``pos``; return where the next one starts, and the size."""
    d = zlib.decompressobj(wbits=31)
    step = _GZIP_FEED_MIN
    while not d.eof:
        if pos >= len(view):
            raise BodyError(400, "gzip body is truncated")
        piece = view[pos : pos + step]
        chunk = d.decompress(piece, limit - size + 1)
        size += len(chunk)
        if size > limit or d.unconsumed_tail:
            raise _too_big(limit)
        if chunk:
            out.append(chunk)
        pos += len(piece) - len(d.unused_data)  # unused_data: the next member's start
        step = min(step * 2, _GZIP_FEED_MAX)
    return pos, size


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # ... to 0x184D2A5F: skippable frames
#: Output read per call; the total is bounded by ``limit`` all the same.
_ZSTD_READ = 1 << 20


class _Truncated(Exception):
    """The body ends inside a zstd frame."""


def _unzstd(body: bytes, limit: int) -> bytes:
    """Check every frame is whole, then decode them all with the output bounded.

    libzstd's streaming reader stops quietly where the input ends, mid-frame or
    not, so a truncated last frame would pass for a shorter body; the frame walk
    (headers and block sizes only, no decoding) finds it.
    """
    corrupt: ValueError | None = None
    try:
        _zstd_frames_whole(body)
    except _Truncated:
        raise BodyError(400, "zstd body is truncated") from None
    except ValueError as exc:
        corrupt = exc  # libzstd names the fault in its own words below
    out: list[bytes] = []
    size = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
        while chunk := reader.read(min(_ZSTD_READ, limit - size + 1)):
            size += len(chunk)
            if size > limit:
                raise _too_big(limit)
            out.append(chunk)
    except zstandard.ZstdError as exc:
        raise BodyError(400, f"zstd body is corrupt: {exc}") from None
    if corrupt is not None:
        raise BodyError(400, f"zstd body is corrupt: {corrupt}")
    return b"".join(out)


def _zstd_frames_whole(body: bytes) -> None:
    """Walk the frames of RFC 8878 by their sizes: ``_Truncated`` if the last is cut short.

    An empty body has no frame, and is truncated as well (libzstd says so too).
    """
    if not body:
        raise _Truncated
    pos = 0
    while pos < len(body):
        pos = _zstd_frame_end(body, pos)


def _need(body: bytes, end: int) -> None:
    if end > len(body):
        raise _Truncated


def _zstd_frame_end(body: bytes, pos: int) -> int:
    """Where the frame starting at ``pos`` ends (raises ``ValueError`` if it is not one)."""
    _need(body, pos + 4)
    magic = int.from_bytes(body[pos : pos + 4], "little")
    if magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
        _need(body, pos + 8)
        end = pos + 8 + int.from_bytes(body[pos + 4 : pos + 8], "little")
        _need(body, end)
        return end
    if magic != _ZSTD_MAGIC:
        raise ValueError(f"no zstd frame at byte {pos}")
    _need(body, pos + 5)
    fhd = body[pos + 4]
    if fhd & 0x08:
        raise ValueError(f"reserved bit set in the frame header at byte {pos}")
    single_segment = (fhd >> 5) & 1
    fcs_size = (single_segment, 2, 4, 8)[fhd >> 6]
    pos += 5 + (1 - single_segment) + (0, 1, 2, 4)[fhd & 3] + fcs_size
    last = 0
    while not last:
        _need(body, pos + 3)
        header = int.from_bytes(body[pos : pos + 3], "little")
        last, kind, block_size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            raise ValueError(f"reserved block type at byte {pos}")
        pos += 3 + (1 if kind == 1 else block_size)  # RLE: one byte, repeated
    pos += 4 if fhd & 0x04 else 0  # content checksum
    _need(body, pos)
    return pos


class Unusable:
    """An item that cannot be an event (an NDJSON line that is not JSON or too long, an
    OTLP span without ids): rejected in its turn, in input order, with ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidEvent) -> None:
        self.error = error


#: A line rejected unparsed once no more rejects are kept: only counted.
_COUNT_ONLY = Unusable(InvalidEvent("$", "not an object"))


@dataclass
class Parsed:
    """The events of a body, and its rejected items: the first ``keep`` of them, and a count.

    Only the first ``keep`` rejected items are kept (dead-lettered and listed in
    the answer); the others are counted in ``rejected_count`` and cost nothing
    more: a body of a million bad lines must not cost a million stored rows.
    """

    #: the valid events, in input order (their wire bytes; ``RequestEvent``s on demand)
    events: ValidEvents = field(default_factory=ValidEvents)
    #: the first ``keep`` rejected items, in input order
    rejected: list[Rejected] = field(default_factory=list)
    #: for NDJSON, the 1-based line of each kept rejected item (same order as ``rejected``)
    lines: list[int | None] = field(default_factory=list)
    #: every rejected item, kept or not
    rejected_count: int = 0
    keep: int = MAX_REJECTS_KEPT

    @property
    def total(self) -> int:
        return len(self.events) + self.rejected_count

    @property
    def full(self) -> bool:
        """True once ``keep`` rejects are kept: any later one is only counted."""
        return len(self.rejected) >= self.keep

    @property
    def rejected_truncated(self) -> bool:
        return self.rejected_count > len(self.rejected)


#: (index, line, raw bytes or None) of an item
_Where = tuple[int, int | None, bytes | None]


class EventBatch:
    """Items waiting for validation, in input order, validated ``_CHUNK`` at a time.

    Shared by both doors (``/v1/events`` and ``/v1/traces``): whatever the body's
    format, an event is judged by the same rules, with the same ``now``.

    An event body's lines (or array items) first go through the raw-bytes
    validator (``schemas.batch.encode_lines_fast``/``encode_array_fast``:
    msgspec over the bytes, whole columns checked at once, the valid events
    encoded in one call); what it accepts is handed in with ``take``. Every
    other item is ``add``-ed, and each chunk of them is one call of
    ``schemas.batch_docs.encode_docs`` (pydantic-core over the chunk, the
    model's own reasons for what it rejects). Either way the valid events
    travel to the handoff as their wire bytes (``ValidEvents``), without an
    event object per event, in input order.
    """

    def __init__(self, parsed: Parsed, *, source: str, now: datetime) -> None:
        self.parsed = parsed
        self.source = source
        self.now = now
        parsed.events.now = now
        self.items: list[Any] = []
        #: (index, line, raw bytes or None) of each item
        self.where: list[_Where] = []
        self.undecodable = 0
        #: events the fast path accepted since the last flush; ``index`` is the input's
        self.taken: list[EncodedBatch] = []

    def take(self, valid: EncodedBatch) -> None:
        """Valid events, already encoded, with their indices in the input.

        They go to ``events`` at the next ``flush``, in order with the items
        added meanwhile: every index taken must come after those of the
        items flushed before.
        """
        if valid.lines:
            self.taken.append(valid)

    def add(self, index: int, line: int | None, raw: bytes | None, item: Any) -> None:
        if item is _COUNT_ONLY or (self.parsed.full and not isinstance(item, dict)):
            self.parsed.rejected_count += 1  # cannot be an event, and will not be kept
            return
        self.items.append(item)
        self.where.append((index, line, raw))
        if isinstance(item, Unusable):
            self.undecodable += 1
        if len(self.items) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        items, where = self.items, self.where
        taken, self.taken = self.taken, []
        if not items:
            for valid in taken:
                self.parsed.events.extend(valid)
            return
        if self.undecodable:
            pos = [k for k, item in enumerate(items) if not isinstance(item, Unusable)]
            batch = encode_docs([items[k] for k in pos], now=self.now)
            bad = [(pos[k], exc) for k, exc in batch.rejects]
            bad += [(k, item.error) for k, item in enumerate(items) if isinstance(item, Unusable)]
            bad.sort(key=lambda b: b[0])
            batch.index = [pos[k] for k in batch.index]
        else:
            batch = encode_docs(items, now=self.now)
            bad = batch.rejects
        if taken:
            batch = _in_order(taken, batch, where)
        self.parsed.events.extend(batch)
        for k, exc in bad:
            index, line, raw = where[k]
            item = items[k]
            if isinstance(item, Unusable):
                raw = (raw or b"")[:MAX_EVENT_BYTES]
            self.reject(index, line, raw, item, exc)
        self.items = []
        self.where = []
        self.undecodable = 0

    def reject(
        self, index: int, line: int | None, raw: bytes | None, item: Any, exc: InvalidEvent
    ) -> None:
        parsed = self.parsed
        parsed.rejected_count += 1
        if parsed.full:
            return
        raw = raw if raw is not None else raw_bytes(item)
        parsed.rejected.append(Rejected(index, exc.field, exc.reason, raw, self.source, self.now))
        parsed.lines.append(line)


def _in_order(taken: list[EncodedBatch], judged: EncodedBatch, where: list[_Where]) -> EncodedBatch:
    """The taken events and those ``encode_docs`` accepted (``index`` into ``where``), by index."""
    rows = [
        (where[k][0], line, model)
        for k, line, model in zip(judged.index, judged.lines, judged.model, strict=True)
    ]
    for valid in taken:
        rows += zip(valid.index, valid.lines, valid.model, strict=True)
    rows.sort(key=lambda r: r[0])
    return EncodedBatch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [])


def parse_events(
    body: bytes,
    kind: str,
    *,
    source: str,
    now: datetime | None = None,
    keep: int = MAX_REJECTS_KEPT,
    max_items: int = MAX_ITEMS,
) -> Parsed:
    """Validate each event on its own; a bad one never holds back the good ones.

    Accepted events keep their order; ``rejected`` is in input order too and
    holds the first ``keep`` rejected items (``rejected_count`` counts them all).
    More than ``max_items`` items (array elements, or NDJSON lines, blank ones
    included) is a 413: the work per request is bounded by count, not only by bytes.

    The raw-bytes validator takes the usual event first, from the body's
    bytes; only what it does not accept is decoded to a value here and
    judged by the model (``EventBatch``), exactly as before it existed.
    """
    parsed = Parsed(keep=keep)
    batch = EventBatch(parsed, source=source, now=now or datetime.now(UTC))
    if kind == "json":
        _parse_array(body, batch, max_items)
    else:
        _check_line_count(body, max_items)
        lines, numbers = _ndjson_split(body)
        for start in range(0, len(lines), _CHUNK):
            part = lines[start : start + _CHUNK]
            valid, others = encode_lines_fast(part, now=batch.now)
            if start:
                valid.index = [start + k for k in valid.index]
            batch.take(valid)
            # Fewer than _CHUNK items are added here unless every line of the part
            # is: no flush of add's comes between the taken events and these items.
            for k in others:
                index = start + k
                _add_line(batch, index, index + 1 if numbers is None else numbers[index], part[k])
            batch.flush()
    batch.flush()
    return parsed


def _add_line(batch: EventBatch, index: int, lineno: int, line: bytes) -> None:
    """An NDJSON line the fast path did not take: its value (or why it has none), judged."""
    if len(line) <= MAX_EVENT_BYTES and not batch.parsed.full:
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            item = _decode_line(line, False)  # the reason, in the usual words
    else:
        item = _decode_line(line, batch.parsed.full)
    batch.add(index, lineno, line, item)


def _parse_array(body: bytes, batch: EventBatch, max_items: int) -> None:
    """A JSON body: one msgspec call for an array of the usual events, else orjson's values."""
    _check_comma_count(body, max_items)
    fast = encode_array_fast(body, now=batch.now)
    if fast is None:
        for index, item in enumerate(_json_items(body, max_items)):
            batch.add(index, None, None, item)
        return
    valid, others = fast
    n = len(valid.index) + len(others)
    if n > max_items:
        raise _too_many_items(n, max_items)
    if not others:
        batch.take(valid)
        return
    items = _json_items(body, max_items)  # the values the model judges, as before
    for start in range(0, n, _CHUNK):
        end = start + _CHUNK
        lo, hi = bisect_left(valid.index, start), bisect_left(valid.index, end)
        batch.take(EncodedBatch(valid.index[lo:hi], valid.lines[lo:hi], valid.model[lo:hi], []))
        for index in others[bisect_left(others, start) : bisect_left(others, end)]:
            batch.add(index, None, None, items[index])
        batch.flush()


def _ndjson_split(body: bytes) -> tuple[list[bytes], list[int] | None]:
    """The non-blank lines of an NDJSON body and their numbers (None: line k is number k + 1).

    The usual body (no blank line, none too long) is cut in C; any other
    takes ``_ndjson_lines``.
    """
    lines = body.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the last line's newline
    if (
        all(lines)
        and not any(map(bytes.isspace, lines))
        and max(map(len, lines), default=0) <= MAX_EVENT_BYTES + 1
    ):
        return lines, None
    numbered = list(_ndjson_lines(body))
    return [line for _, line in numbered], [n for n, _ in numbered]


def _ndjson_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """``schemas.codec.iter_ndjson`` of a body already in memory, without its buffering.

    The same lines and numbers: split at ``\n`` (a ``\r`` before it stays, JSON
    whitespace), blank lines skipped but counted, a line longer than
    ``MAX_EVENT_BYTES`` cut to one byte more (enough to be rejected as too long).
    ``tests/hostile/test_http_batch_bodies.py`` compares the two.
    """
    cut = MAX_EVENT_BYTES + 1
    for lineno, line in enumerate(body.split(b"\n"), 1):
        if line and not line.isspace():
            yield lineno, line if len(line) <= cut else line[:cut]


#: Commas a JSON body may hold per allowed item. An event has 16 fields (15 commas,
#: one more between items); the bound stops a body of millions of tiny values
#: (``[{},{},...]``) before orjson builds them all, in one pass in C.
_COMMAS_PER_ITEM = 24


def _check_comma_count(body: bytes, max_items: int) -> None:
    if body.count(b",") > max_items * _COMMAS_PER_ITEM:
        raise BodyError(
            413,
            f"JSON body holds more values than {max_items} events could; "
            f"the limit is {max_items} events per request: send smaller batches",
        )


def _too_many_items(n: int, max_items: int) -> BodyError:
    return BodyError(
        413,
        f"JSON array has {n} items, over the limit of {max_items} per request; "
        "send smaller batches",
    )


def _json_items(body: bytes, max_items: int) -> list[Any]:
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"malformed JSON ({exc.msg} at char {exc.pos})") from None
    if isinstance(doc, dict):
        return [doc]  # a single event object is a batch of one
    if not isinstance(doc, list):
        raise BodyError(400, "a JSON body must be an array of event objects")
    if len(doc) > max_items:
        raise _too_many_items(len(doc), max_items)
    return doc


def _check_line_count(body: bytes, max_items: int) -> None:
    """Count lines before any per-line work (one pass in C): blank ones cost work too."""
    lines = body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
    if lines > max_items:
        raise BodyError(
            413,
            f"NDJSON body has {lines} lines, over the limit of {max_items} per request; "
            "send smaller batches",
        )


#: The start of a line that can hold a JSON object (RFC 8259 whitespace, then ``{``).
_OBJECT_START = re.compile(rb"[ \t\r\n]*\{")


def _decode_line(line: bytes, full: bool) -> Any:
    """The line's JSON value, or ``Unusable`` with the reason.

    Once no more rejects are kept (``full``), a line that is too long or cannot
    start an object is rejected without being parsed, and no reason is written
    for a line that is not JSON: it would not be kept anyway.
    """
    too_long = len(line) > MAX_EVENT_BYTES
    if full and (too_long or not _OBJECT_START.match(line)):
        return _COUNT_ONLY
    if too_long:
        return Unusable(
            InvalidEvent("$", f"event is {len(line)} bytes, over the {MAX_EVENT_BYTES} byte limit")
        )
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if full:
            return _COUNT_ONLY
        return Unusable(InvalidEvent("$", f"malformed JSON ({exc.msg} at char {exc.pos})"))
