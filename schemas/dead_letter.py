"""The dead-letter topic's document: one format, one codec, for every producer and the sink.

Every rejected input that goes to ``telemetry.requests.dlq`` (the emitter's
invalid events, the HTTP door's rejected items, ``telemetry ingest``'s
rejected lines) is one Kafka record whose value is this JSON document
(docs/record-format.md, "The dead-letter topic"):

    {"format": "telemetry.dead-letter.v1", "received_at": "2026-05-09T07:35:25.123000Z",
     "source": "http:3f2a9c…@10.0.0.7", "location": "index 17", "index": 17,
     "field": "ttft_ms", "reason": "ttft_ms: must be <= latency_ms",
     "raw": "{\"event_id\":…}", "raw_truncated": true}

``raw`` is only ever the redacted form of the input (``schemas.redact``):
a rejected line may carry prompt text, and the topic outlives the request.

Before this format there were two, told apart by their keys: the
collector's (``index``, ``raw_truncated``, no ``location``) and
``telemetry ingest``'s (``location``, no ``index``). Records of both can
still be on the topic until its retention has passed, so ``decode`` reads
them too, by those keys; a document naming another ``format`` is refused
rather than misread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.redact import redact_rejected

__all__ = [
    "FORMAT",
    "RAW_LIMIT",
    "DeadLetter",
    "UnreadableDeadLetter",
    "decode_dead_letter",
    "encode_dead_letter",
]

#: The value of the document's ``format`` key.
FORMAT = "telemetry.dead-letter.v1"
#: A document keeps at most this many bytes of the rejected input's redacted form.
RAW_LIMIT = 8 * 1024


class UnreadableDeadLetter(ValueError):
    """A dead-letter record this code cannot read (not JSON, or another format)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected input, as read back from the dead-letter topic."""

    source: str
    #: where the input was, for a person: ``index 17``, ``line 9``, ``emit()``
    location: str
    field: str
    reason: str
    #: the kept (redacted) form of the input, never the input itself
    raw: bytes
    #: 0-based position in its request or batch, when it had one
    index: int | None = None
    received_at: str | None = None
    raw_truncated: bool = False


def encode_dead_letter(
    *,
    source: str,
    location: str,
    field: str,
    reason: str,
    raw: bytes,
    index: int | None = None,
    received_at: datetime | None = None,
) -> bytes:
    """The dead-letter record's value for one rejected input; ``raw`` is redacted here."""
    kept = redact_rejected(raw)[:RAW_LIMIT]
    doc: dict[str, Any] = {
        "format": FORMAT,
        "received_at": received_at or datetime.now(UTC),
        "source": source,
        "location": location,
        "index": index,
        "field": field,
        "reason": reason,
        "raw": kept.decode("utf-8", "replace"),
        "raw_truncated": kept != raw,
    }
    return orjson.dumps(doc, option=orjson.OPT_UTC_Z)


def _text(doc: dict[str, Any], key: str, default: str = "") -> str:
    value = doc.get(key)
    return default if value is None else str(value)


def decode_dead_letter(value: bytes) -> DeadLetter:
    """Read a dead-letter record's value: this format, or one of the two older ones.

    Raises ``UnreadableDeadLetter`` for anything else. ``raw`` is returned as
    stored; a record written before redaction existed may still hold the
    whole input, so a reader that keeps it redacts it again (idempotent).
    """
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise UnreadableDeadLetter("not JSON") from None
    if not isinstance(doc, dict):
        raise UnreadableDeadLetter("not a JSON object")
    form = doc.get("format")
    if form is not None and form != FORMAT:
        raise UnreadableDeadLetter(f"format {form!r} is not one this reader knows")
    index = doc.get("index")
    index = index if type(index) is int and index >= 0 else None
    if form == FORMAT or "location" in doc:  # this format, or telemetry ingest's older one
        location = _text(doc, "location", "?")
    elif "index" in doc:  # the collector's older one (the emitter wrote index -1)
        location = "emit()" if doc["index"] == -1 else f"index {_text(doc, 'index', '?')}"
    else:
        raise UnreadableDeadLetter("neither this format nor an older one")
    return DeadLetter(
        source=_text(doc, "source"),
        location=location,
        field=_text(doc, "field", "$"),
        reason=_text(doc, "reason"),
        raw=_text(doc, "raw").encode(),
        index=index,
        received_at=_text(doc, "received_at") or None,
        raw_truncated=doc.get("raw_truncated") is True,
    )
