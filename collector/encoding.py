"""What travels: a ``Record`` is (topic, key, value) bytes, ready for Kafka or the spool.

Dead letters are ``schemas.dead_letter`` documents; ``dead_letter_value`` is the
collector's way of writing one for an item of a request.

A record of the events topic may carry several events of one model, as
NDJSON lines (the record format, docs/record-format.md): the emitter packs
a batch of valid dicts that way. ``events_in`` counts events, not records,
and ``unpacked`` turns such records back into one record per event (what
the spool keeps, so its counts and bounds stay per event).

``encode_record`` is the hot path's encoder. It produces exactly the bytes of
``schemas.codec.encode_event`` (a unit test holds them equal) without the
``model_dump`` detour: a frozen ``RequestEvent`` keeps exactly its contract
fields in ``__dict__``, all of which orjson serialises natively.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import groupby, repeat
from operator import attrgetter
from typing import Any

import orjson

from schemas.dead_letter import RAW_LIMIT, encode_dead_letter
from schemas.event import RequestEvent
from schemas.event_record import MAX_RECORD_BYTES, pack_lines

__all__ = [
    "DLQ_RAW_LIMIT",
    "Record",
    "dead_letter_value",
    "encode_record",
    "events_in",
    "pack_events",
    "raw_bytes",
    "unpacked",
]

#: (topic, key, value)
Record = tuple[str, bytes, bytes]

#: The DLQ keeps at most this many bytes of the rejected input's redacted form.
DLQ_RAW_LIMIT = RAW_LIMIT

_OPTS = orjson.OPT_UTC_Z
_MODEL = attrgetter("model")


def events_in(records: Sequence[Record]) -> int:
    """Events carried by ``records``: a line each (a JSON text holds no raw newline)."""
    return len(records) + sum(map(bytes.count, [r[2] for r in records], repeat(b"\n")))


def unpacked(records: Sequence[Record]) -> list[Record]:
    """``records`` with each packed one split into a record per event, in order."""
    if not any(b"\n" in r[2] for r in records):
        return list(records)
    out: list[Record] = []
    for topic, key, value in records:
        if b"\n" in value:
            out.extend(zip(repeat(topic), repeat(key), value.split(b"\n")))
        else:
            out.append((topic, key, value))
    return out


def encode_record(event: RequestEvent, topic: str) -> Record:
    """The Kafka record of a valid event: keyed by model, value = the contract's JSON.

    The value is copied to a right-sized ``bytes``: orjson (3.12+) leaves each
    result in a buffer of at least 4 KiB, and values wait in the sender's
    batches (or, with the broker down, in memory until spooled).
    """
    return (
        topic,
        event.model.encode(),
        bytes(memoryview(orjson.dumps(event.__dict__, option=_OPTS))),
    )


def pack_events(
    events: Sequence[RequestEvent], topic: str, max_bytes: int = MAX_RECORD_BYTES
) -> list[Record]:
    """Valid events as records of their model, each carrying that model's events in order.

    The lines are ``encode_record``'s bytes: orjson writes each object of a
    list as it writes the object alone, and one call per model costs far less
    than one per event. The objects are flat, so ``},{`` separates them; a
    text value holding it (the count is then off) sends that model's events
    through ``encode_record`` one by one. Values stay within ``max_bytes``
    (docs/record-format.md).
    """
    by_model = sorted(events, key=_MODEL) if len(set(map(_MODEL, events))) > 1 else events
    out: list[Record] = []
    for model, group in groupby(by_model, _MODEL):
        rows = [e.__dict__ for e in group]
        body = orjson.dumps(rows, option=_OPTS)[1:-1]
        if body.count(b"},{") == len(rows) - 1:
            value = body.replace(b"},{", b"}\n{")
        else:
            value = b"\n".join(orjson.dumps(row, option=_OPTS) for row in rows)
        key = model.encode()
        if len(value) <= max_bytes:
            out.append((topic, key, value))
        else:
            out.extend((topic, key, v) for v in pack_lines(value.split(b"\n"), max_bytes))
    return out


def raw_bytes(item: Any) -> bytes:
    """Best-effort bytes of something that failed validation, for the dead-letter record.

    Not yet what is kept: ``dead_letter_value`` redacts them.
    """
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8", "replace")
    try:
        return orjson.dumps(item, default=repr, option=_OPTS | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return repr(item).encode("utf-8", "replace")


def dead_letter_value(
    *,
    source: str,
    index: int,
    field: str,
    reason: str,
    raw: bytes,
    received_at: datetime | None = None,
) -> bytes:
    """The dead-letter document for one rejected item of a request or batch (``index``).

    The format and its codec are ``schemas.dead_letter`` (one for every
    producer); ``raw`` is kept only in its redacted form there. A negative
    ``index`` means the item had no position (an ``emit()`` call).
    """
    return encode_dead_letter(
        source=source,
        location=f"index {index}" if index >= 0 else "emit()",
        index=index if index >= 0 else None,
        field=field,
        reason=reason,
        raw=raw,
        received_at=received_at,
    )
