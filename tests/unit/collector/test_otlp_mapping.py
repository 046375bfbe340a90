"""The span -> event mapping, on hand-built OTLP spans (the official message classes)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.encoding import raw_bytes
from collector.otlp_mapping import (
    Resource,
    SpanRejected,
    event_id,
    map_span,
    resource_of,
)
from schemas.codec import validate_event
from schemas.event import RequestEvent

START = time.time_ns() - 60 * 10**9
GW = Resource("gw-otel-1", "eu-west")


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    else:
        v = AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def span(
    attrs: dict[str, Any] | None = None,
    *,
    duration_ms: float = 2300.0,
    error: bool = False,
    events: list[tuple[str, float]] = (),  # type: ignore[assignment]
    span_id: bytes = b"\x01" * 8,
    trace_id: bytes = b"\x02" * 16,
) -> Span:
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4.1-mini",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 350,
    }
    base.update(attrs or {})
    s = Span(
        trace_id=trace_id,
        span_id=span_id,
        name="chat gpt-4.1-mini",
        start_time_unix_nano=START,
        end_time_unix_nano=START + int(duration_ms * 1e6),
        attributes=[kv(k, v) for k, v in base.items() if v is not None],
    )
    for name, at_ms in events:
        e = s.events.add(name=name, time_unix_nano=START + int(at_ms * 1e6))
        e.attributes.append(kv("gen_ai.event.content", "SECRET PROMPT"))
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    return s


def test_a_plain_chat_span_maps_to_a_valid_event() -> None:
    fields = map_span(span(), GW)
    assert fields is not None
    event = validate_event(fields)
    assert event.model == "gpt-4.1-mini" and event.provider == "openai"
    assert (event.input_tokens, event.output_tokens, event.cached_input_tokens) == (120, 350, 0)
    assert event.latency_ms == 2300.0 and event.ttft_ms is None and event.stream is False
    assert (event.status, event.error_type, event.http_status) == ("ok", None, 200)
    assert (event.gateway_id, event.region) == ("gw-otel-1", "eu-west")
    assert int(event.ts.timestamp() * 1000) == START // 10**6


def test_response_model_and_new_names_win_over_request_model_and_old_names() -> None:
    fields = map_span(
        span(
            {
                "gen_ai.response.model": "gpt-4.1-mini-2025-04-14",
                "gen_ai.system": "azure",
                "gen_ai.usage.prompt_tokens": 999,
                "gen_ai.usage.completion_tokens": 999,
            }
        ),
        GW,
    )
    assert fields is not None
    assert fields["model"] == "gpt-4.1-mini-2025-04-14"
    assert fields["provider"] == "openai"
    assert (fields["input_tokens"], fields["output_tokens"]) == (120, 350)


def test_older_names_are_read_when_the_new_ones_are_absent() -> None:
    fields = map_span(
        span(
            {
                "gen_ai.provider.name": None,
                "gen_ai.system": "anthropic",
                "gen_ai.usage.input_tokens": None,
                "gen_ai.usage.output_tokens": None,
                "gen_ai.usage.prompt_tokens": 10,
                "gen_ai.usage.completion_tokens": 20.0,
                "gen_ai.usage.cache_read_input_tokens": 4,
            }
        ),
        GW,
    )
    assert fields is not None
    assert (fields["provider"], fields["input_tokens"], fields["output_tokens"]) == (
        "anthropic",
        10,
        20,
    )
    assert fields["cached_input_tokens"] == 4


@pytest.mark.parametrize(
    "key",
    [
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.cached_tokens",
    ],
)
def test_cached_input_tokens_from_each_documented_attribute(key: str) -> None:
    fields = map_span(span({key: 30}), GW)
    assert fields is not None and fields["cached_input_tokens"] == 30


def test_ttft_from_the_attribute_in_seconds_then_from_a_first_chunk_event() -> None:
    by_attr = map_span(span({"gen_ai.response.time_to_first_chunk": 0.412}), GW)
    assert by_attr is not None
    assert by_attr["ttft_ms"] == pytest.approx(412.0) and by_attr["stream"] is True
    for name in ("gen_ai.content.first_chunk", "first_token", "llm.first_token"):
        by_event = map_span(span(events=[("other", 5.0), (name, 250.0)]), GW)
        assert by_event is not None
        assert by_event["ttft_ms"] == pytest.approx(250.0) and by_event["stream"] is True


def test_stream_from_the_streaming_attributes() -> None:
    for key in ("gen_ai.request.stream", "llm.is_streaming"):
        on = map_span(span({key: True}), GW)
        off = map_span(span({key: False}), GW)
        assert on is not None and on["stream"] is True and on["ttft_ms"] is None
        assert off is not None and off["stream"] is False


@pytest.mark.parametrize(
    ("attrs", "error", "want_type", "want_http"),
    [
        ({}, True, "provider_error", 500),
        ({"http.response.status_code": 429}, True, "rate_limited", 429),
        ({"error.type": "openai.RateLimitError"}, False, "rate_limited", 500),
        ({"error.type": "429"}, False, "rate_limited", 500),
        ({"error.type": "TimeoutError"}, False, "timeout", 500),
        ({"error.type": "_OTHER", "http.response.status_code": 504}, True, "timeout", 504),
        ({"http.response.status_code": 408}, True, "timeout", 408),
        ({"http.response.status_code": 400}, True, "client_error", 400),
        ({"error.type": "404"}, True, "client_error", 500),
        ({"http.response.status_code": 503}, True, "provider_error", 503),
        ({"error.type": "InternalServerError"}, False, "provider_error", 500),
    ],
)
def test_errors_map_to_the_contracts_error_types(
    attrs: dict[str, Any], error: bool, want_type: str, want_http: int
) -> None:
    fields = map_span(span(attrs, error=error), GW)
    assert fields is not None
    assert (fields["status"], fields["error_type"], fields["http_status"]) == (
        "error",
        want_type,
        want_http,
    )
    validate_event(fields)


def test_ok_span_keeps_its_http_status() -> None:
    fields = map_span(span({"http.response.status_code": 201}), GW)
    assert fields is not None and (fields["status"], fields["http_status"]) == ("ok", 201)


def test_spans_that_are_not_model_calls_are_ignored() -> None:
    assert map_span(Span(name="GET /", span_id=b"\x01" * 8, trace_id=b"\x02" * 16), GW) is None
    for op in ("execute_tool", "invoke_agent", "create_agent"):
        assert map_span(span({"gen_ai.operation.name": op}), GW) is None
    # a model without an operation name is a model call
    assert map_span(span({"gen_ai.operation.name": None}), GW) is not None


def test_a_chat_span_without_a_model_is_rejected_by_name() -> None:
    fields = map_span(span({"gen_ai.request.model": None}), GW)
    assert fields is not None and "model" not in fields
    with pytest.raises(Exception, match="model: is required"):
        validate_event(fields)


def test_event_id_is_deterministic_per_trace_and_span() -> None:
    a = map_span(span(), GW)
    b = map_span(span(), GW)
    c = map_span(span(span_id=b"\x03" * 8), GW)
    assert a is not None and b is not None and c is not None
    assert a["event_id"] == b["event_id"] == str(event_id(b"\x02" * 16, b"\x01" * 8))
    assert c["event_id"] != a["event_id"]


@pytest.mark.parametrize(
    ("trace_id", "span_id"), [(b"", b"\x01" * 8), (b"\x02" * 16, b""), (b"\x00" * 16, b"\x01" * 8)]
)
def test_spans_without_usable_ids_are_rejected(trace_id: bytes, span_id: bytes) -> None:
    with pytest.raises(SpanRejected) as exc:
        map_span(span(trace_id=trace_id, span_id=span_id), GW)
    assert exc.value.field == "event_id" and "event_id" not in exc.value.fields


def test_negative_duration_and_absurd_tokens_fail_validation() -> None:
    neg = map_span(span(duration_ms=-5), GW)
    assert neg is not None
    with pytest.raises(Exception, match="latency_ms"):
        validate_event(neg)
    big = map_span(span({"gen_ai.usage.output_tokens": 2**62}), GW)
    assert big is not None
    with pytest.raises(Exception, match="output_tokens"):
        validate_event(big)


def test_no_content_is_read_whatever_the_span_carries() -> None:
    """Only the listed attributes reach the fields: prompt attributes and event bodies never."""
    s = span(
        {
            "gen_ai.prompt": "SECRET PROMPT",
            "gen_ai.input.messages": '[{"role":"user","content":"SECRET PROMPT"}]',
            "gen_ai.completion.0.content": "SECRET COMPLETION",
        },
        events=[("gen_ai.content.prompt", 1.0), ("first_token", 100.0)],
    )
    fields = map_span(s, GW)
    assert fields is not None
    assert b"SECRET" not in raw_bytes(fields)
    assert set(fields) <= set(RequestEvent.model_fields)


def test_resource_names_the_gateway_and_region() -> None:
    assert resource_of([kv("service.name", "gw"), kv("cloud.region", "us-east-1")]) == Resource(
        "gw", "us-east-1"
    )
    assert resource_of(
        [kv("service.name", "gw"), kv("service.instance.id", "gw-7"), kv("host.name", "h")]
    ) == Resource("gw-7", None)
    no_gateway = map_span(span(), resource_of([]))
    assert no_gateway is not None and "gateway_id" not in no_gateway
    assert orjson.loads(raw_bytes(no_gateway))["region"] is None
