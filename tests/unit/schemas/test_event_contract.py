"""Every rule of the request event (docs/definitions.md, schema version 1), one row each.

A rejected event raises ``InvalidEvent`` whose ``field`` names the offending
field (``"$"`` for the document itself), so a gateway engineer can fix the
emitter from the message alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.batch import validate_lines
from schemas.codec import MAX_EVENT_BYTES, decode_event, encode_event, validate_event
from schemas.errors import InvalidEvent
from schemas.event import ERROR_TYPES, RequestEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TS = "2026-03-01T11:00:00Z"

FIELDS = (
    "event_id",
    "schema_version",
    "ts",
    "gateway_id",
    "region",
    "model",
    "provider",
    "stream",
    "status",
    "error_type",
    "http_status",
    "ttft_ms",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
)


@pytest.fixture
def event(event_factory: Any) -> Any:
    """A valid event an hour before ``NOW``; validation runs with ``now=NOW``."""

    def make(**overrides: Any) -> dict[str, Any]:
        return event_factory(**{"ts": TS, **overrides})

    return make


REJECTED: list[tuple[str, dict[str, Any], str]] = [
    # --- wrong types ---
    ("event_id int", {"event_id": 123}, "event_id"),
    ("event_id null", {"event_id": None}, "event_id"),
    ("schema_version str", {"schema_version": "1"}, "schema_version"),
    ("schema_version bool", {"schema_version": True}, "schema_version"),
    ("schema_version float", {"schema_version": 1.0}, "schema_version"),
    ("ts int", {"ts": 1_772_362_800}, "ts"),
    ("ts null", {"ts": None}, "ts"),
    ("gateway_id int", {"gateway_id": 7}, "gateway_id"),
    ("gateway_id null", {"gateway_id": None}, "gateway_id"),
    ("region int", {"region": 5}, "region"),
    ("region list", {"region": ["eu"]}, "region"),
    ("model int", {"model": 5}, "model"),
    ("provider bool", {"provider": True}, "provider"),
    ("stream str", {"stream": "true"}, "stream"),
    ("stream int", {"stream": 1}, "stream"),
    ("stream null", {"stream": None}, "stream"),
    ("status bool", {"status": True}, "status"),
    ("http_status bool", {"http_status": True}, "http_status"),
    ("http_status str", {"http_status": "200"}, "http_status"),
    ("http_status float", {"http_status": 200.0}, "http_status"),
    ("ttft_ms bool", {"ttft_ms": True}, "ttft_ms"),
    ("ttft_ms str", {"ttft_ms": "420"}, "ttft_ms"),
    ("latency_ms bool", {"latency_ms": True}, "latency_ms"),
    ("latency_ms str", {"latency_ms": "2300"}, "latency_ms"),
    ("latency_ms null", {"latency_ms": None}, "latency_ms"),
    ("input_tokens bool", {"input_tokens": True}, "input_tokens"),
    ("input_tokens float", {"input_tokens": 120.0}, "input_tokens"),
    ("input_tokens str", {"input_tokens": "120"}, "input_tokens"),
    ("output_tokens bool", {"output_tokens": False}, "output_tokens"),
    ("output_tokens float", {"output_tokens": 1.5}, "output_tokens"),
    ("cached_input_tokens bool", {"cached_input_tokens": False}, "cached_input_tokens"),
    ("cached_input_tokens null", {"cached_input_tokens": None}, "cached_input_tokens"),
    # --- out of range ---
    ("http_status 99", {"http_status": 99}, "http_status"),
    ("http_status 600", {"http_status": 600}, "http_status"),
    ("ttft_ms negative", {"ttft_ms": -0.5}, "ttft_ms"),
    ("latency_ms negative", {"latency_ms": -1}, "latency_ms"),
    ("input_tokens negative", {"input_tokens": -1}, "input_tokens"),
    ("output_tokens negative", {"output_tokens": -1}, "output_tokens"),
    ("cached negative", {"cached_input_tokens": -1, "input_tokens": 0}, "cached_input_tokens"),
    # --- enumerations ---
    ("status unknown", {"status": "OK"}, "status"),
    ("error_type unknown", {"status": "error", "error_type": "bogus"}, "error_type"),
    ("schema_version 2", {"schema_version": 2}, "schema_version"),
    ("schema_version 0", {"schema_version": 0}, "schema_version"),
    # --- lengths ---
    ("gateway_id empty", {"gateway_id": ""}, "gateway_id"),
    ("gateway_id 129", {"gateway_id": "g" * 129}, "gateway_id"),
    ("model empty", {"model": ""}, "model"),
    ("model 201", {"model": "m" * 201}, "model"),
    ("provider empty", {"provider": ""}, "provider"),
    ("provider 101", {"provider": "p" * 101}, "provider"),
    # --- cross-field rules ---
    ("error_type set while ok", {"status": "ok", "error_type": "timeout"}, "error_type"),
    ("error_type null while error", {"status": "error", "error_type": None}, "error_type"),
    ("ttft > latency", {"ttft_ms": 2300.5, "latency_ms": 2300.0}, "ttft_ms"),
    ("cached > input", {"input_tokens": 10, "cached_input_tokens": 11}, "cached_input_tokens"),
    # --- bad UUID ---
    ("uuid garbage", {"event_id": "not-a-uuid"}, "event_id"),
    ("uuid too short", {"event_id": "12345678-1234-5678-1234-56781234567"}, "event_id"),
    ("uuid empty", {"event_id": ""}, "event_id"),
    # --- timestamps ---
    ("ts without offset", {"ts": "2026-03-01T11:00:00"}, "ts"),
    ("ts date only", {"ts": "2026-03-01"}, "ts"),
    ("ts words", {"ts": "yesterday at noon"}, "ts"),
    ("ts bad month", {"ts": "2026-13-01T11:00:00Z"}, "ts"),
    ("ts bad day", {"ts": "2026-02-30T11:00:00Z"}, "ts"),
    ("ts slashes", {"ts": "2026/03/01 11:00:00Z"}, "ts"),
    ("ts 6 min in the future", {"ts": "2026-03-01T12:06:00Z"}, "ts"),
    ("ts future via offset", {"ts": "2026-03-01T13:06:00+01:00"}, "ts"),
]


@pytest.mark.parametrize(("overrides", "field"), [pytest.param(o, f, id=i) for i, o, f in REJECTED])
def test_rule_is_rejected_naming_the_field(
    event: Any, overrides: dict[str, Any], field: str
) -> None:
    doc = event(**overrides)
    with pytest.raises(InvalidEvent) as info:
        validate_event(doc, now=NOW)
    assert info.value.field == field, info.value.reason
    assert info.value.rule
    assert info.value.reason.startswith(f"{field}: ")
    # The same through the bytes path.
    with pytest.raises(InvalidEvent) as info:
        decode_event(orjson.dumps(doc), now=NOW)
    assert info.value.field == field, info.value.reason
    assert not InvalidEvent.retriable


# Forms that ``datetime.fromisoformat`` (Python 3.11+) takes but RFC 3339 does not:
# the contract says ``ts`` is an RFC 3339 timestamp.
ISO_ONLY_TIMESTAMPS = [
    pytest.param("20260301T110000Z", id="basic-format"),
    pytest.param("2026-W09-7T11:00:00Z", id="week-date"),
    pytest.param("2026-03-01T11Z", id="hour-only"),
    pytest.param("2026-03-01T11:00Z", id="no-seconds"),
    pytest.param("2026-03-01T11:00:00+0100", id="offset-without-colon"),
    pytest.param("2026-03-01T11:00:00+01", id="offset-hours-only"),
]


@pytest.mark.parametrize("ts", ISO_ONLY_TIMESTAMPS)
def test_non_rfc3339_iso_forms_are_rejected(event: Any, ts: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(event(ts=ts), now=NOW)
    assert info.value.field == "ts"


@pytest.mark.parametrize("name", FIELDS)
def test_missing_field_is_rejected(event: Any, name: str) -> None:
    doc = event()
    del doc[name]
    with pytest.raises(InvalidEvent) as info:
        validate_event(doc, now=NOW)
    assert info.value.field == name
    assert "required" in info.value.rule


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"[{}]", b"1", b"null", b'"event"', b"true"],
    ids=["list", "list-of-object", "number", "null", "string", "bool"],
)
def test_non_object_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, now=NOW)
    assert info.value.field == "$"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"event_id": }', b"{'a': 1}", b'{"a": 1} trailing', b"\xff\xfe"],
    ids=["empty", "unclosed", "missing-value", "single-quotes", "trailing", "not-utf8"],
)
def test_malformed_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, now=NOW)
    assert info.value.field == "$"
    assert "malformed" in info.value.rule


def _padded(doc: dict[str, Any], size: int) -> bytes:
    """``doc`` as JSON of exactly ``size`` bytes, padded with an unknown field."""
    base = orjson.dumps({**doc, "pad": ""})
    raw = orjson.dumps({**doc, "pad": "x" * (size - len(base))})
    assert len(raw) == size
    return raw


def test_oversize_event_is_rejected_before_parsing(event: Any) -> None:
    raw = _padded(event(), MAX_EVENT_BYTES + 1)
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, now=NOW)
    assert info.value.field == "$"
    assert str(MAX_EVENT_BYTES) in info.value.rule


def test_event_of_exactly_the_limit_is_accepted(event: Any) -> None:
    raw = _padded(event(), MAX_EVENT_BYTES)
    assert decode_event(raw, now=NOW).model == "openai/gpt-4.1-mini"


def test_oversize_is_measured_in_bytes_for_str_input_too(event: Any) -> None:
    """64 KiB is a byte limit: a str of 40K two-byte characters is 80 KB on the wire."""
    doc = event(pad="é" * 40_000)
    text = orjson.dumps(doc).decode()
    assert len(text) <= MAX_EVENT_BYTES < len(text.encode())
    with pytest.raises(InvalidEvent) as info:
        decode_event(orjson.dumps(doc), now=NOW)
    assert info.value.field == "$"
    with pytest.raises(InvalidEvent) as info:
        decode_event(text, now=NOW)
    assert info.value.field == "$"


# --------------------------------------------------------------------- accepted


def test_future_tolerance_uses_context_now(event: Any) -> None:
    four_min = (NOW + timedelta(minutes=4)).isoformat()
    assert validate_event(event(ts=four_min), now=NOW).ts == NOW + timedelta(minutes=4)
    six_min = (NOW + timedelta(minutes=6)).isoformat()
    # The same ts is fine for a later "now": the rule is relative to the context.
    later = NOW + timedelta(minutes=2)
    assert validate_event(event(ts=six_min), now=later).ts == NOW + timedelta(minutes=6)
    with pytest.raises(InvalidEvent):
        validate_event(event(ts=six_min), now=NOW)


VALID = [
    pytest.param({}, id="plain"),
    pytest.param({"ttft_ms": None}, id="ttft-null"),
    pytest.param({"region": None}, id="region-null"),
    pytest.param({"ttft_ms": 2300.0, "latency_ms": 2300.0}, id="ttft-equals-latency"),
    pytest.param({"ttft_ms": 0, "latency_ms": 0}, id="zeros-as-json-int"),
    pytest.param({"input_tokens": 5, "cached_input_tokens": 5}, id="cached-equals-input"),
    pytest.param({"output_tokens": 0, "input_tokens": 0}, id="no-tokens"),
    pytest.param({"http_status": 100}, id="http-100"),
    pytest.param({"http_status": 599}, id="http-599"),
    pytest.param({"gateway_id": "g" * 128}, id="gateway-128"),
    pytest.param({"model": "m" * 200}, id="model-200"),
    pytest.param({"provider": "p" * 100}, id="provider-100"),
    pytest.param({"stream": False}, id="stream-false"),
    pytest.param({"ts": "2026-03-01T12:05:00Z"}, id="ts-exactly-5min-ahead"),
    *[
        pytest.param({"status": "error", "error_type": t, "http_status": 502}, id=t)
        for t in ERROR_TYPES
    ],
]


@pytest.mark.parametrize("overrides", VALID)
def test_valid_event_is_accepted(event: Any, overrides: dict[str, Any]) -> None:
    doc = event(**overrides)
    ev = validate_event(doc, now=NOW)
    assert isinstance(ev, RequestEvent)
    for name, value in overrides.items():
        if name not in ("ts", "event_id"):
            assert getattr(ev, name) == value


def test_ts_offset_is_normalised_to_utc_and_truncated_to_ms(event: Any) -> None:
    ev = validate_event(event(ts="2026-03-01T13:00:00.123456+02:00"), now=NOW)
    assert ev.ts == datetime(2026, 3, 1, 11, 0, 0, 123000, tzinfo=UTC)
    assert ev.ts.utcoffset() == timedelta(0)
    encoded = orjson.loads(encode_event(ev))
    assert encoded["ts"] == "2026-03-01T11:00:00.123000Z"


def test_unknown_fields_are_dropped_and_never_encoded(event: Any) -> None:
    doc = event(prompt="secret prompt", completion="secret completion", extra={"a": 1})
    ev = validate_event(doc, now=NOW)
    assert not hasattr(ev, "prompt")
    raw = encode_event(ev)
    assert b"secret" not in raw
    assert set(orjson.loads(raw)) == set(FIELDS)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"ttft_ms": None, "region": None},
        {"status": "error", "error_type": "timeout", "http_status": 504, "ttft_ms": None},
        {"ts": "2026-03-01T13:00:00.987654+02:00", "latency_ms": 12.25, "ttft_ms": 0.5},
    ],
)
def test_encode_decode_round_trip(event: Any, overrides: dict[str, Any]) -> None:
    ev = validate_event(event(**overrides), now=NOW)
    raw = encode_event(ev)
    back = decode_event(raw, now=NOW)
    assert back == ev
    assert encode_event(back) == raw


# The batch path (schemas/batch.py) must agree with the model, rule by rule.


@pytest.mark.parametrize(("overrides", "field"), [pytest.param(o, f, id=i) for i, o, f in REJECTED])
def test_batch_path_rejects_with_the_same_field_and_words(
    event: Any, overrides: dict[str, Any], field: str
) -> None:
    doc = event(**overrides)
    with pytest.raises(InvalidEvent) as info:
        decode_event(orjson.dumps(doc), now=NOW)
    good = orjson.dumps(event())
    batch = validate_lines([good, orjson.dumps(doc), good], now=NOW)
    assert batch.events.index == [0, 2]
    [(index, exc)] = batch.rejects
    assert index == 1
    assert (exc.field, exc.reason) == (info.value.field, info.value.reason)


@pytest.mark.parametrize("ts", ISO_ONLY_TIMESTAMPS)
def test_batch_path_rejects_non_rfc3339_forms(event: Any, ts: str) -> None:
    batch = validate_lines([orjson.dumps(event(ts=ts))], now=NOW)
    assert not batch.events
    assert batch.rejects[0][1].field == "ts"


@pytest.mark.parametrize("overrides", VALID)
def test_batch_path_accepts_the_same_values(event: Any, overrides: dict[str, Any]) -> None:
    raw = orjson.dumps(event(**overrides))
    ev = decode_event(raw, now=NOW)
    batch = validate_lines([raw], now=NOW)
    assert not batch.rejects
    cols = batch.events
    assert cols.event_id == [ev.event_id.bytes]
    assert cols.ts_ms == [round(ev.ts.timestamp() * 1000)]
    for name in FIELDS:
        if name not in ("event_id", "ts", "schema_version"):
            assert getattr(cols, name) == [getattr(ev, name)], name
