"""What travels: a ``Record`` is (topic, key, value) bytes, ready for Kafka or the spool.

Dead letters are ``schemas.dead_letter`` documents; ``dead_letter_value`` is the
collector's way of writing one for an item of a request.

``encode_record`` is the hot path's encoder. It produces exactly the bytes of
``schemas.codec.encode_event`` (a unit test holds them equal) without the
``model_dump`` detour: a frozen ``RequestEvent`` keeps exactly its contract
fields in ``__dict__``, all of which orjson serialises natively.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from schemas.dead_letter import RAW_LIMIT, encode_dead_letter
from schemas.event import RequestEvent

__all__ = ["DLQ_RAW_LIMIT", "Record", "dead_letter_value", "encode_record", "raw_bytes"]

#: (topic, key, value)
Record = tuple[str, bytes, bytes]

#: The DLQ keeps at most this many bytes of the rejected input's redacted form.
DLQ_RAW_LIMIT = RAW_LIMIT

_OPTS = orjson.OPT_UTC_Z


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
