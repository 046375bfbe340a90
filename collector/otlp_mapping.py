"""One OpenTelemetry GenAI span -> the fields of one request event (a plain dict).

Pure: no I/O, no validation. The dict goes through ``schemas.codec.validate_event``
like any event posted to ``/v1/events``; this module only decides which span
attribute feeds which contract field (docs/collector.md, "OpenTelemetry (OTLP) in",
has the table).

Only the attributes named in ``_WANTED`` are ever read, and only span events'
names and times (never their attributes): a span may carry the prompt and the
completion (``gen_ai.prompt``, ``gen_ai.input.messages``, content events), and
none of it may reach the store, a topic or a dead letter.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = [
    "EVENT_ID_NAMESPACE",
    "FIRST_CHUNK_EVENTS",
    "NOT_MODEL_CALLS",
    "Resource",
    "SpanRejected",
    "event_id",
    "is_model_call",
    "map_span",
    "resource_of",
]

#: uuid5 namespace of event ids derived from spans (fixed forever: a re-sent export
#: must map to the same ids, today and after any upgrade).
EVENT_ID_NAMESPACE = uuid.UUID("5f0c6a52-3f0e-4b8e-9a53-0e1b7c2d4a61")

#: Span events whose time marks the first streamed chunk (TTFT when the span has no
#: ``gen_ai.response.time_to_first_chunk``).
FIRST_CHUNK_EVENTS = frozenset(
    {"gen_ai.content.first_chunk", "gen_ai.first_chunk", "first_token", "llm.first_token"}
)
#: GenAI operations that are not a call to a model: their spans wrap model calls
#: (which have spans of their own) and would count a request twice.
NOT_MODEL_CALLS = frozenset({"execute_tool", "invoke_agent", "create_agent"})

_OPERATION = "gen_ai.operation.name"
_REQUEST_MODEL = "gen_ai.request.model"
_RESPONSE_MODEL = "gen_ai.response.model"
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_CACHED = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.cached_tokens",
)
_TTFT_S = "gen_ai.response.time_to_first_chunk"
_STREAM = ("gen_ai.request.stream", "llm.is_streaming")
_ERROR_TYPE = "error.type"
_HTTP_STATUS = "http.response.status_code"

#: Every span attribute ever read; any other is skipped unread.
_WANTED = frozenset(
    {
        _OPERATION,
        _REQUEST_MODEL,
        _RESPONSE_MODEL,
        *_PROVIDER,
        *_INPUT,
        *_OUTPUT,
        *_CACHED,
        _TTFT_S,
        *_STREAM,
        _ERROR_TYPE,
        _HTTP_STATUS,
    }
)
_RESOURCE_WANTED = frozenset({"service.instance.id", "service.name", "cloud.region"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ERROR = Status.STATUS_CODE_ERROR


class SpanRejected(Exception):
    """An LLM span that cannot become an event at all; ``fields`` is what was mapped."""

    def __init__(self, field: str, reason: str, fields: dict[str, Any]) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.fields = fields


@dataclass(frozen=True, slots=True)
class Resource:
    """What a resource (one gateway process) contributes to each of its spans' events."""

    gateway_id: str | None
    region: str | None


def _value(v: AnyValue) -> Any:
    """A scalar attribute value as Python; arrays, maps and bytes are not read (None)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    return None


def _attrs(kvs: Iterable[KeyValue], wanted: frozenset[str]) -> dict[str, Any]:
    """The wanted attributes only: nothing else is even converted."""
    return {kv.key: _value(kv.value) for kv in kvs if kv.key in wanted}


def resource_of(kvs: Iterable[KeyValue]) -> Resource:
    """``service.instance.id`` else ``service.name`` names the gateway; ``cloud.region``."""
    a = _attrs(kvs, _RESOURCE_WANTED)
    gateway = a.get("service.instance.id") or a.get("service.name")
    region = a.get("cloud.region")
    return Resource(
        gateway if isinstance(gateway, str) else None,
        region if isinstance(region, str) else None,
    )


def event_id(trace_id: bytes, span_id: bytes) -> uuid.UUID:
    """uuid5 over the 16 + 8 id bytes: a span exported twice is one event, counted once."""
    digest = hashlib.sha1(EVENT_ID_NAMESPACE.bytes + trace_id + span_id).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def _first(a: dict[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        v = a.get(key)
        if v is not None:
            return v
    return None


def _count(v: Any) -> Any:
    """Token counts: absent is 0; an integral double is an int; anything else as given
    (the contract rejects it by name)."""
    if v is None:
        return 0
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _rfc3339(unix_nano: int) -> str:
    ts = _EPOCH + timedelta(microseconds=unix_nano // 1000)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _ttft_ms(span: Span, a: dict[str, Any]) -> float | None:
    seconds = a.get(_TTFT_S)
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return float(seconds) * 1000.0
    for ev in span.events:
        if ev.name in FIRST_CHUNK_EVENTS:
            return (ev.time_unix_nano - span.start_time_unix_nano) / 1e6
    return None


def _error_type(error_type: Any, http_status: int | None) -> str:
    """``error.type`` and the HTTP status to the contract's error types (doc table)."""
    text = str(error_type).lower() if error_type is not None else ""
    if text.isdigit() and http_status is None:
        http_status = int(text)
    compact = text.replace("_", "").replace("-", "").replace(" ", "")
    if http_status == 429 or "ratelimit" in compact:
        return "rate_limited"
    if "timeout" in compact or "timedout" in compact or http_status in (408, 504):
        return "timeout"
    if http_status is not None and 400 <= http_status < 500:
        return "client_error"
    return "provider_error"


def is_model_call(a: dict[str, Any]) -> bool:
    """A GenAI span of a call to a model; everything else is ignored (not rejected)."""
    op = a.get(_OPERATION)
    if op is not None:
        return op not in NOT_MODEL_CALLS
    return a.get(_REQUEST_MODEL) is not None


def map_span(span: Span, resource: Resource) -> dict[str, Any] | None:
    """The event fields of an LLM span, None for any other span.

    A field the span does not give is left out, so that the contract's reason
    names it (``model: is required``). Raises ``SpanRejected`` when the span has
    no usable ids (its event id would not be its own).
    """
    a = _attrs(span.attributes, _WANTED)
    if not is_model_call(a):
        return None
    trace_id, span_id = span.trace_id, span.span_id
    ids_ok = len(trace_id) == 16 and len(span_id) == 8 and any(trace_id) and any(span_id)
    out: dict[str, Any] = {"event_id": str(event_id(trace_id, span_id))} if ids_ok else {}
    out["schema_version"] = 1
    out["ts"] = _rfc3339(span.start_time_unix_nano)
    if resource.gateway_id is not None:
        out["gateway_id"] = resource.gateway_id
    out["region"] = resource.region
    model = a.get(_RESPONSE_MODEL) or a.get(_REQUEST_MODEL)
    if model is not None:
        out["model"] = model
    provider = _first(a, _PROVIDER)
    if provider is not None:
        out["provider"] = provider
    ttft = _ttft_ms(span, a)
    stream_attr = _first(a, _STREAM)
    out["stream"] = ttft is not None or stream_attr is True
    http = a.get(_HTTP_STATUS)
    http_status = http if isinstance(http, int) and not isinstance(http, bool) else None
    error_type = a.get(_ERROR_TYPE)
    if span.status.code == _ERROR or error_type is not None:
        out["status"] = "error"
        out["error_type"] = _error_type(error_type, http_status)
        out["http_status"] = http_status if http_status is not None else 500
    else:
        out["status"] = "ok"
        out["error_type"] = None
        out["http_status"] = http_status if http_status is not None else 200
    out["ttft_ms"] = ttft
    out["latency_ms"] = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    out["input_tokens"] = _count(_first(a, _INPUT))
    out["output_tokens"] = _count(_first(a, _OUTPUT))
    out["cached_input_tokens"] = _count(_first(a, _CACHED))
    if not ids_ok:
        raise SpanRejected(
            "event_id", "a span needs a non-zero 16-byte trace_id and 8-byte span_id", out
        )
    return out
