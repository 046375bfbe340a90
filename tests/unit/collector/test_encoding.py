"""The hot-path encoder writes exactly the contract's bytes; dead-letter documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from collector.encoding import DLQ_RAW_LIMIT, dead_letter_value, encode_record, raw_bytes
from schemas.codec import encode_event, validate_event

# An offset and microseconds to normalise; recent, since events over 30 days old are invalid.
_AN_HOUR_AGO_PLUS_2 = (
    (datetime.now(UTC) - timedelta(hours=1))
    .replace(microsecond=678901)
    .astimezone(timezone(timedelta(hours=2)))
    .isoformat()
)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"region": None, "ttft_ms": None},
        {"status": "error", "error_type": "timeout", "http_status": 504, "ttft_ms": None},
        {"ts": _AN_HOUR_AGO_PLUS_2, "latency_ms": 12.5, "ttft_ms": 1},
        {"model": "anthropic/claude-ß", "extra_field": "dropped"},
    ],
)
def test_encode_record_matches_encode_event(event_factory: Any, overrides: dict[str, Any]) -> None:
    event = validate_event(event_factory(**overrides))
    topic, key, value = encode_record(event, "t")
    assert topic == "t"
    assert key == event.model.encode()
    assert value == encode_event(event)
    assert b"extra_field" not in value


def test_dead_letter_document_names_field_and_truncates_raw() -> None:
    doc = orjson.loads(
        dead_letter_value(source="s", index=3, field="ts", reason="ts: bad", raw=b"x" * 20_000)
    )
    assert set(doc) >= {"received_at", "source", "index", "field", "reason", "raw"}
    assert doc["index"] == 3
    assert doc["field"] == "ts"
    # Not JSON: only a short prefix is kept (schemas/redact.py), well under the DLQ's byte cap.
    assert doc["raw"] == "x" * 256 + "…" and len(doc["raw"]) < DLQ_RAW_LIMIT
    assert doc["raw_truncated"] is True
    assert doc["received_at"].endswith("Z")


def test_raw_bytes_never_raises() -> None:
    assert raw_bytes(b"ab") == b"ab"
    assert raw_bytes("é") == "é".encode()
    assert orjson.loads(raw_bytes({"a": 1})) == {"a": 1}
    assert raw_bytes({1: object()})  # unserialisable values fall back to repr
