"""OTLP/HTTP trace exports in, events out: decode, map each span, validate, answer.

Pure functions, no I/O, like ``collector.http.body``: the app reads the body and
runs ``parse_traces`` in its decode pool. Decoding uses the official
``opentelemetry-proto`` classes (protobuf, or OTLP/JSON through
``google.protobuf.json_format`` on the same classes); answers are an
``ExportTraceServiceResponse`` or, for a request that cannot be used, a
``google.rpc.Status``, encoded like the request (OTLP/HTTP spec).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.code_pb2 import Code
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.encoding import raw_bytes
from collector.http.body import (
    MAX_ITEMS,
    MAX_REJECTS_KEPT,
    BodyError,
    EventBatch,
    Parsed,
    Unusable,
    media_of,
)
from collector.otlp_mapping import SpanRejected, map_span, resource_of
from schemas.errors import InvalidEvent

__all__ = [
    "CONTENT_TYPES",
    "ParsedSpans",
    "content_kind",
    "decode_request",
    "error_body",
    "export_response",
    "media_type",
    "parse_traces",
]

#: media type -> body kind
CONTENT_TYPES = {"application/x-protobuf": "protobuf", "application/json": "json"}
_MEDIA = {kind: media for media, kind in CONTENT_TYPES.items()}
#: Reasons named in ``partial_success.error_message``; the rest are counted.
REASONS_IN_MESSAGE = 5
#: Commas an OTLP/JSON body may hold per allowed span (a GenAI span with its ids,
#: times, status and twenty attributes has about 60): bounds the values orjson
#: builds before the span count can be checked.
_COMMAS_PER_SPAN = 64
#: HTTP status -> google.rpc.Code of the Status body
_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    413: Code.INVALID_ARGUMENT,
    415: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    503: Code.UNAVAILABLE,
}


@dataclass
class ParsedSpans(Parsed):
    """``Parsed`` for an export: plus the spans that are not LLM requests (ignored)."""

    ignored: int = 0


def content_kind(content_type: str | None) -> str:
    media = media_of(content_type)
    kind = CONTENT_TYPES.get(media)
    if kind is None:
        raise BodyError(
            415,
            "Content-Type must be application/x-protobuf or application/json (OTLP/HTTP), "
            f"got {media or 'none'!r}",
        )
    return kind


def media_type(content_type: str | None) -> str:
    """The answer's media type: JSON for a JSON request, else protobuf (OTLP's default)."""
    media = media_of(content_type)
    return "application/json" if media == "application/json" else "application/x-protobuf"


def _encode(message: Message, media: str) -> bytes:
    if media == "application/json":
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def error_body(status: int, message: str, media: str) -> bytes:
    """A ``google.rpc.Status`` naming the problem, the body of every OTLP 4xx/5xx."""
    return _encode(Status(code=_CODES.get(status, Code.UNKNOWN), message=message), media)


def _too_many(count: int, max_items: int) -> BodyError:
    return BodyError(
        413,
        f"export has {count} spans, over the limit of {max_items} per request; "
        "send smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
    )


def decode_request(body: bytes, kind: str, max_items: int = MAX_ITEMS) -> ExportTraceServiceRequest:
    """The export as the official message class; ``BodyError`` 400 when it is not one."""
    request = ExportTraceServiceRequest()
    if kind == "protobuf":
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BodyError(400, f"malformed protobuf ExportTraceServiceRequest: {exc}") from None
    else:
        _parse_json(body, request, max_items)
    count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if count > max_items:
        raise _too_many(count, max_items)
    return request


def _parse_json(body: bytes, request: ExportTraceServiceRequest, max_items: int) -> None:
    """OTLP/JSON: proto3 JSON except that trace and span ids are hex, not base64."""
    if body.count(b",") > max_items * _COMMAS_PER_SPAN:
        raise BodyError(
            413, f"JSON export holds more values than {max_items} spans could; send smaller batches"
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"malformed JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(doc, dict):
        raise BodyError(400, "an OTLP/JSON body must be an ExportTraceServiceRequest object")
    spans = list(_json_spans(doc))
    if len(spans) > max_items:
        raise _too_many(len(spans), max_items)
    for span in spans:
        _ids_to_base64(span, ("traceId", "trace_id", "spanId", "span_id", "parentSpanId"))
        for link in _list(span, "links"):
            _ids_to_base64(link, ("traceId", "trace_id", "spanId", "span_id"))
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BodyError(400, f"malformed OTLP/JSON: {exc}") from None


def _list(obj: Any, *keys: str) -> list[Any]:
    for key in keys:
        v = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(v, list):
            return v
    return []


def _json_spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        span
        for rs in _list(doc, "resourceSpans", "resource_spans")
        for ss in _list(rs, "scopeSpans", "scope_spans")
        for span in _list(ss, "spans")
        if isinstance(span, dict)
    ]


def _ids_to_base64(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Hex ids as the base64 proto3 JSON expects; an id that is not hex becomes empty
    (its span is then rejected by name, not the whole export)."""
    for key in keys:
        v = obj.get(key)
        if isinstance(v, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(v)).decode()
            except ValueError:
                obj[key] = ""


def parse_traces(
    body: bytes,
    kind: str,
    *,
    source: str,
    now: datetime | None = None,
    keep: int = MAX_REJECTS_KEPT,
    max_items: int = MAX_ITEMS,
) -> ParsedSpans:
    """Each LLM span mapped and validated on its own; a bad span never holds back the others.

    ``index`` of a rejected span is its 0-based position among all the export's
    spans (in resource, scope, span order; ignored spans count). The rejected
    item's bytes are the mapped fields only, never the span.
    """
    request = decode_request(body, kind, max_items)
    parsed = ParsedSpans(keep=keep)
    batch = EventBatch(parsed, source=source, now=now or datetime.now(UTC))
    index = 0
    for rs in request.resource_spans:
        resource = resource_of(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                try:
                    fields = map_span(span, resource)
                except SpanRejected as exc:
                    bad = Unusable(InvalidEvent(exc.field, exc.reason))
                    batch.add(index, None, raw_bytes(exc.fields), bad)
                else:
                    if fields is None:
                        parsed.ignored += 1
                    else:
                        batch.add(index, None, None, fields)
                index += 1
    batch.flush()
    return parsed


def _error_message(parsed: Parsed) -> str:
    reasons = [f"span {r.index}: {r.reason}" for r in parsed.rejected[:REASONS_IN_MESSAGE]]
    more = parsed.rejected_count - len(reasons)
    if more > 0:
        reasons.append(f"and {more} more")
    return f"{parsed.rejected_count} spans rejected: " + "; ".join(reasons)


def export_response(parsed: Parsed, media: str) -> bytes:
    """``ExportTraceServiceResponse``: ``partial_success`` only when a span was rejected
    (the spec: a fully accepted export leaves it unset)."""
    response = ExportTraceServiceResponse()
    if parsed.rejected_count:
        response.partial_success.rejected_spans = parsed.rejected_count
        response.partial_success.error_message = _error_message(parsed)
    return _encode(response, media)
