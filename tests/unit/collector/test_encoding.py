"""The hot-path encoder writes exactly the contract's bytes; dead-letter documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from collector.encoding import (
    DLQ_RAW_LIMIT,
    dead_letter_value,
    encode_record,
    events_in,
    pack_events,
    raw_bytes,
    unpacked,
)
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


def _lines_by_key(records: list[tuple[str, bytes, bytes]]) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for topic, key, value in records:
        assert topic == "ev"
        out.setdefault(key, []).extend(value.split(b"\n"))
    return out


def test_packed_events_are_encode_records_bytes_per_model_in_order(event_factory: Any) -> None:
    models = ["a/one", "b/two", "c/three"]
    events = [validate_event(event_factory(model=models[i % 3])) for i in range(300)]
    events[7] = validate_event(event_factory(model="a/one", gateway_id='gw"},{"x'))
    records = pack_events(events, "ev")
    assert len(records) == 3
    want: dict[bytes, list[bytes]] = {}
    for e in events:
        want.setdefault(e.model.encode(), []).append(encode_record(e, "ev")[2])
    assert _lines_by_key(records) == want
    assert events_in(records) == 300
    assert unpacked(records) == [
        ("ev", k, line) for k, lines in _lines_by_key(records).items() for line in lines
    ]


def test_packed_events_stay_under_the_record_bound(event_factory: Any) -> None:
    events = [validate_event(event_factory(model="a/one")) for _ in range(100)]
    records = pack_events(events, "ev", max_bytes=5_000)
    assert len(records) > 5
    assert all(len(r[2]) <= 5_000 for r in records)
    assert _lines_by_key(records) == {b"a/one": [encode_record(e, "ev")[2] for e in events]}
