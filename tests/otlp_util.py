"""GenAI spans recorded by the real OpenTelemetry SDK, and the events they stand for.

A ``Call`` is one LLM request described once; ``record`` makes it a span the way an
instrumented gateway would (SDK tracer, explicit times, GenAI attributes) and
``as_event`` writes the same request as our JSON event, computed here, not by the
mapping under test: the two doors must give the same stats.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

__all__ = ["GATEWAY", "REGION", "SECRET", "Call", "as_event", "encode", "otlp_json", "record"]

GATEWAY = "gw-otel-1"
REGION = "eu-west"
#: Text that must never be found anywhere we store or publish.
SECRET = "SECRET-PROMPT-7f3a"

_ERRORS = {
    "rate_limited": ("RateLimitError", 429),
    "timeout": ("TimeoutError", 504),
    "provider_error": ("InternalServerError", 500),
    "client_error": ("BadRequestError", 400),
}


@dataclass
class Call:
    model: str = "gpt-4.1-mini"
    provider: str = "openai"
    ago_s: float = 60.0
    latency_ms: float = 2300.0
    ttft_ms: float | None = 412.0
    input_tokens: int = 120
    output_tokens: int = 350
    cached_input_tokens: int = 0
    error_type: str | None = None
    #: extra span attributes (e.g. prompt text, bad values), set as given
    extra: dict[str, Any] = field(default_factory=dict)
    #: span events (name, attributes), at 1 ms after the start
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    start_ns: int = 0

    def __post_init__(self) -> None:
        self.start_ns = self.start_ns or time.time_ns() - int(self.ago_s * 1e9)

    @property
    def end_ns(self) -> int:
        return self.start_ns + round(self.latency_ms * 1e6)


def record(calls: Sequence[Call], *, with_resource: bool = True) -> list[ReadableSpan]:
    """Each call as a finished SDK span (in order)."""
    attrs = {"service.name": "gw-otel", "service.instance.id": GATEWAY, "cloud.region": REGION}
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(attrs if with_resource else {}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.otlp")
    for c in calls:
        span = tracer.start_span(f"chat {c.model}", start_time=c.start_ns)
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", c.model)
        span.set_attribute("gen_ai.provider.name", c.provider)
        span.set_attribute("gen_ai.usage.input_tokens", c.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", c.output_tokens)
        if c.cached_input_tokens:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", c.cached_input_tokens)
        if c.ttft_ms is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", c.ttft_ms / 1000)
        if c.error_type is not None:
            kind, http = _ERRORS[c.error_type]
            span.set_attribute("error.type", kind)
            span.set_attribute("http.response.status_code", http)
            span.set_status(Status(StatusCode.ERROR, kind))
        for key, value in c.extra.items():
            span.set_attribute(key, value)
        for name, event_attrs in c.events:
            span.add_event(name, event_attrs, timestamp=c.start_ns + 1_000_000)
        span.end(end_time=c.end_ns)
    provider.shutdown()
    return list(memory.get_finished_spans())


def encode(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The export request the OTLP exporters send for these spans."""
    return encode_spans(spans)


def as_event(c: Call) -> dict[str, Any]:
    """The same request as our own JSON event (a fresh event_id)."""
    ts = datetime.fromtimestamp(c.start_ns // 1_000_000 / 1000, UTC)
    kind_http = _ERRORS.get(c.error_type or "")
    return {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "gateway_id": GATEWAY,
        "region": REGION,
        "model": c.model,
        "provider": c.provider,
        "stream": c.ttft_ms is not None,
        "status": "error" if c.error_type else "ok",
        "error_type": c.error_type,
        "http_status": kind_http[1] if kind_http else 200,
        "ttft_ms": c.ttft_ms,
        "latency_ms": (c.end_ns - c.start_ns) / 1e6,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "cached_input_tokens": c.cached_input_tokens,
    }


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of a request: proto3 JSON from json_format, with the ids as hex."""
    doc = json_format.MessageToDict(request)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex()
    return orjson.dumps(doc)
