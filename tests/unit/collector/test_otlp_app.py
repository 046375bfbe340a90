"""POST /v1/traces with an in-memory handoff: OTLP answers, limits, partial success."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from ingest_util import AUTH
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from otlp_util import SECRET, Call, as_event, encode, otlp_json, record

from collector.handoff import MemoryHandoff
from collector.otlp import parse_traces
from collector.otlp_mapping import event_id

PROTO = {**AUTH, "Content-Type": "application/x-protobuf"}
JSON = {**AUTH, "Content-Type": "application/json"}


def proto(calls: list[Call]) -> bytes:
    return encode(record(calls)).SerializeToString()


def answer(body: bytes) -> ExportTraceServiceResponse:
    out = ExportTraceServiceResponse()
    out.ParseFromString(body)
    return out


def status(body: bytes) -> Status:
    out = Status()
    out.ParseFromString(body)
    return out


async def test_protobuf_export_becomes_the_events_it_stands_for(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    calls = [Call(), Call(model="claude-sonnet-4", provider="anthropic", error_type="timeout")]
    spans = record(calls)
    resp = await client.post("/v1/traces", data=encode(spans).SerializeToString(), headers=PROTO)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-protobuf"
    assert not answer(await resp.read()).HasField("partial_success")
    got = [e.model_dump(exclude={"event_id", "ts"}) for e in handoff.events]
    want = [{k: v for k, v in as_event(c).items() if k not in ("event_id", "ts")} for c in calls]
    assert got == want
    ids = [
        str(event_id(s.context.trace_id.to_bytes(16), s.context.span_id.to_bytes(8))) for s in spans
    ]
    assert [str(e.event_id) for e in handoff.events] == ids


async def test_otlp_json_with_hex_ids_gives_the_same_events(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    request = encode(record([Call(), Call(ttft_ms=None)]))
    resp = await client.post("/v1/traces", data=otlp_json(request), headers=JSON)
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
    assert await resp.json() == {}
    resp_pb = await client.post("/v1/traces", data=request.SerializeToString(), headers=PROTO)
    assert resp_pb.status == 200
    assert len(handoff.events) == 4
    assert handoff.events[:2] == handoff.events[2:]


async def test_otlp_json_partial_success_is_json(client: TestClient[Any, Any]) -> None:
    request = encode(record([Call(latency_ms=-1, ttft_ms=None), Call()]))
    resp = await client.post("/v1/traces", data=otlp_json(request), headers=JSON)
    assert resp.status == 200
    doc = await resp.json()
    assert doc["partialSuccess"]["rejectedSpans"] == "1"  # int64: a string in proto3 JSON
    assert "span 0: latency_ms" in doc["partialSuccess"]["errorMessage"]


async def test_gzip_export(client: TestClient[Any, Any], handoff: MemoryHandoff) -> None:
    resp = await client.post(
        "/v1/traces",
        data=gzip.compress(proto([Call()])),
        headers={**PROTO, "Content-Encoding": "gzip"},
    )
    assert resp.status == 200 and len(handoff.events) == 1


async def test_bad_spans_are_counted_in_partial_success_and_never_hold_back_good_ones(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    calls = [
        Call(),
        Call(latency_ms=-5, ttft_ms=None),  # end before start
        Call(extra={"gen_ai.usage.output_tokens": 2**62}),  # absurd
        Call(extra={"gen_ai.request.model": ""}),  # no model: rejected
        Call(),
    ]
    request = encode(record(calls))
    ignored = request.resource_spans[0].scope_spans[0].spans.add(name="GET /health")
    ignored.trace_id, ignored.span_id = b"\x01" * 16, b"\x01" * 8
    resp = await client.post("/v1/traces", data=request.SerializeToString(), headers=PROTO)
    assert resp.status == 200
    partial = answer(await resp.read()).partial_success
    assert partial.rejected_spans == 3
    assert partial.error_message.startswith("3 spans rejected: span 1: latency_ms")
    assert "span 2: output_tokens" in partial.error_message
    assert "span 3: model" in partial.error_message
    assert len(handoff.events) == 2
    assert [(r.index, r.field) for r in handoff.rejected] == [
        (1, "latency_ms"),
        (2, "output_tokens"),
        (3, "model"),
    ]


async def test_rejected_spans_keep_mapped_fields_only(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    call = Call(
        latency_ms=-1,
        extra={"gen_ai.prompt": SECRET, "gen_ai.input.messages": f'[{{"content":"{SECRET}"}}]'},
        events=[("gen_ai.content.prompt", {"gen_ai.prompt": SECRET})],
    )
    resp = await client.post("/v1/traces", data=proto([call]), headers=PROTO)
    assert resp.status == 200
    assert len(handoff.rejected) == 1
    dlq = handoff.rejected[0].to_dlq()
    assert SECRET.encode() not in dlq and SECRET.encode() not in handoff.rejected[0].raw
    assert b"gpt-4.1-mini" in dlq  # the mapped fields are there


@pytest.mark.parametrize(
    ("headers", "body", "code", "media"),
    [
        (PROTO, b"\xff\xff\xff\xff", 400, "application/x-protobuf"),
        (JSON, b'{"resourceSpans": [', 400, "application/json"),
        (JSON, b'{"resourceSpans": 7}', 400, "application/json"),
        ({**AUTH, "Content-Type": "text/plain"}, b"x", 415, "application/x-protobuf"),
        ({**PROTO, "Content-Encoding": "gzip"}, b"not gzip", 400, "application/x-protobuf"),
        ({"Content-Type": "application/json"}, b"{}", 401, "application/json"),
    ],
)
async def test_unusable_requests_get_a_status_body_in_the_requests_encoding(
    client: TestClient[Any, Any],
    handoff: MemoryHandoff,
    headers: dict[str, str],
    body: bytes,
    code: int,
    media: str,
) -> None:
    resp = await client.post("/v1/traces", data=body, headers=headers)
    assert resp.status == code
    assert resp.headers["Content-Type"] == media
    raw = await resp.read()
    if media == "application/json":
        msg = json_format.Parse(raw, Status()).message
    else:
        msg = status(raw).message
    assert msg
    assert not handoff.events


async def test_backlog_answers_429_with_retry_after(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    handoff.busy = 2.4
    resp = await client.post("/v1/traces", data=proto([Call()]), headers=PROTO)
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    assert "backlog" in status(await resp.read()).message


async def test_body_limits_apply(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/traces", data=b"\x00" * (65 * 1024), headers=PROTO)
    assert resp.status == 413
    bomb = gzip.compress(b"\x00" * (1024 * 1024))
    resp = await client.post("/v1/traces", data=bomb, headers={**PROTO, "Content-Encoding": "gzip"})
    assert resp.status == 413


def test_span_count_is_bounded_and_rejects_kept_are_bounded() -> None:
    request = encode(record([Call(latency_ms=-1, ttft_ms=None) for _ in range(12)]))
    body = request.SerializeToString()
    with pytest.raises(Exception, match="over the limit of 10"):
        parse_traces(body, "protobuf", source="t", max_items=10)
    parsed = parse_traces(body, "protobuf", source="t", keep=5)
    assert parsed.rejected_count == 12 and len(parsed.rejected) == 5


def test_ignored_spans_are_counted_not_rejected() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(3):
        spans.add(name="db query", trace_id=b"\x01" * 16, span_id=bytes([i + 1]) * 8)
    parsed = parse_traces(request.SerializeToString(), "protobuf", source="t")
    assert (parsed.ignored, parsed.rejected_count, len(parsed.events)) == (3, 0, 0)
