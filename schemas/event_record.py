"""The events topic's record format: one Kafka record carries a batch of events.

Contract (docs/record-format.md): the value is NDJSON, one event object per
line, UTF-8, at most ``MAX_RECORD_BYTES``; every event of a record belongs to
the partition a producer keyed by model would pick (murmur2 of the model's
UTF-8 bytes, as the Java client and aiokafka do), so all of a model's events
still meet in one partition. Our producers mark such records with two
headers (``content-type``, ``telemetry-schema``). A record without headers
is read the same way, so a producer that writes one event per record, keyed
by model, is a one-line batch and keeps working unchanged.

Why NDJSON rather than a JSON array: a line can be rejected on its own (its
neighbours still count), a line number names it, and it is what
``FORMAT JSONEachRow`` reads (a ClickHouse Kafka engine table consumes the
topic as is).

Pure: no Kafka client here. ``partition_for`` uses the murmur2 that aiokafka
ships so the producers and this module agree by construction.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate

from aiokafka.partitioner import murmur2

__all__ = [
    "CONTENT_TYPE",
    "CONTENT_TYPE_HEADER",
    "MAX_RECORD_BYTES",
    "RECORD_HEADERS",
    "SCHEMA",
    "SCHEMA_HEADER",
    "UnreadableRecord",
    "pack_lines",
    "pack_ranges",
    "partition_for",
    "record_lines",
]

CONTENT_TYPE_HEADER = "content-type"
CONTENT_TYPE = b"application/x-ndjson"
SCHEMA_HEADER = "telemetry-schema"
SCHEMA = b"request.v1"
#: Headers our producers put on every events record (aiokafka's shape).
RECORD_HEADERS: list[tuple[str, bytes]] = [
    (CONTENT_TYPE_HEADER, CONTENT_TYPE),
    (SCHEMA_HEADER, SCHEMA),
]
#: A record's value is at most this many bytes (Kafka's default
#: ``max.message.bytes`` is 1 MiB including overhead, so we stay a little under).
MAX_RECORD_BYTES = 1_000_000


class UnreadableRecord(ValueError):
    """A record whose headers name a format or schema this code does not read."""

    def __init__(self, header: str, value: bytes) -> None:
        self.field = header
        self.rule = f"record header {header}={value!r} is not one this consumer reads"
        super().__init__(self.rule)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a model-keyed producer picks (aiokafka's and Java's default)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def pack_lines(lines: Iterable[bytes], max_bytes: int = MAX_RECORD_BYTES) -> Iterator[bytes]:
    """Join encoded events (no newline inside) into record values of at most ``max_bytes``.

    A single line larger than ``max_bytes`` becomes a record of its own (the
    broker refuses it if it is over its own limit; events are far smaller).
    """
    lines = lines if isinstance(lines, list) else list(lines)
    for start, end in pack_ranges(lines, max_bytes):
        yield b"\n".join(lines[start:end])


def pack_ranges(lines: Sequence[bytes], max_bytes: int = MAX_RECORD_BYTES) -> list[tuple[int, int]]:
    """``pack_lines``'s values as ``(start, end)`` slices of ``lines``: as many lines to a
    value as fit, in order.

    Found by bisection over the running sizes (one pass in C), not line by
    line: a producer packs tens of thousands of lines at a time.
    """
    #: ends[i]: the bytes of lines[0..i] with a newline after each
    ends = list(accumulate(map((1).__add__, map(len, lines))))
    out: list[tuple[int, int]] = []
    start = base = 0
    while start < len(lines):
        end = bisect_right(ends, base + max_bytes + 1, lo=start)
        end = max(end, start + 1)  # a line over the bound is a value of its own
        out.append((start, end))
        base, start = ends[end - 1], end
    return out


def record_lines(
    value: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None
) -> list[bytes]:
    """The event lines of a record, in order; blank lines (and a CR before LF) dropped.

    The index of a line in the returned list is the event's place in the
    record: with the record's offset it identifies the event in the log.
    Raises ``UnreadableRecord`` for a content type or schema we do not read.
    """
    for name, raw in headers or ():
        if name == CONTENT_TYPE_HEADER and raw.split(b";", 1)[0].strip() != CONTENT_TYPE:
            raise UnreadableRecord(name, raw)
        if name == SCHEMA_HEADER and raw != SCHEMA:
            raise UnreadableRecord(name, raw)
    if not value:
        return []
    if b"\n" not in value:
        return [value] if value.strip() else []
    if b"\r" not in value:  # the usual record: one C-level pass
        return list(filter(bytes.strip, value.split(b"\n")))
    out = []
    for line in value.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            out.append(line)
    return out
