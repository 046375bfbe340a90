"""OTLP in, end to end: the real OpenTelemetry SDK and OTLP/HTTP exporter against
``telemetry run`` (embedded store) and the Kafka collector (real broker).

The same requests sent as spans and as our JSON events must give the same stats;
a re-sent export counts once; prompt text carried by spans is found nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult
from otlp_util import SECRET, Call, as_event, encode, otlp_json, record
from pipeline_util import wait_for
from run_util import RunProcess, cli

from collector.auth import TokenAuth, hash_token
from collector.otlp_mapping import event_id
from collector.server import ServiceConfig, serve
from schemas.event_record import record_lines

pytestmark = pytest.mark.integration

TOKEN = "otel-gw-token"
PROMPT_ATTRS = {
    "gen_ai.prompt": SECRET,
    "gen_ai.input.messages": orjson.dumps([{"role": "user", "content": SECRET}]).decode(),
}
PROMPT_EVENTS = [("gen_ai.content.prompt", {"gen_ai.prompt": SECRET})]


def traffic() -> list[Call]:
    """Valid calls over three models, every error type, streamed or not, some with prompts."""
    calls = []
    for i in range(24):
        model, provider = [
            ("gpt-4.1-mini", "openai"),
            ("claude-sonnet-4", "anthropic"),
            ("gemini-2.5-flash", "google"),
        ][i % 3]
        calls.append(
            Call(
                model=model,
                provider=provider,
                ago_s=60 + i * 7,
                latency_ms=800 + 97.5 * i,
                ttft_ms=None if i % 4 == 0 else 100 + 11.25 * i,
                input_tokens=100 + i,
                output_tokens=10 * i,
                cached_input_tokens=i if i % 5 == 0 else 0,
                error_type=[None, None, None, "rate_limited", "timeout", "provider_error"][i % 6]
                if i % 2
                else None,
                extra=PROMPT_ATTRS if i % 3 == 1 else {},
                events=PROMPT_EVENTS if i % 3 == 2 else [],
            )
        )
    return calls


def bad_calls() -> list[Call]:
    """Spans rejected per OTLP (end before start, absurd tokens, no model): with prompts."""
    return [
        Call(latency_ms=-10, ttft_ms=None, extra=PROMPT_ATTRS),
        Call(extra={"gen_ai.usage.output_tokens": 10**12, **PROMPT_ATTRS}),
        Call(extra={"gen_ai.request.model": ""}, events=PROMPT_EVENTS),
    ]


def _instant(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def post(url: str, body: bytes, content_type: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _stats(cwd: Path) -> list[dict[str, Any]]:
    out = cli(cwd, "stats", "--json")
    assert out.returncode == 0, out.stderr
    rows = orjson.loads(out.stdout)
    drop = {"as_of", "updated_at", "computed_at", "refreshed_at", "version"}
    return sorted(
        ({k: v for k, v in r.items() if k not in drop} for r in rows),
        key=lambda r: (r["model"], r.get("provider") or ""),
    )


def _sql(cwd: Path, query: str) -> str:
    out = cli(cwd, "sql", query, "-f", "csv")
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_spans_and_events_give_the_same_stats_under_telemetry_run(tmp_path: Path) -> None:
    good, bad = traffic(), bad_calls()
    spans = record(good[:16] + bad)  # protobuf, through the SDK's exporter
    json_request = encode(record(good[16:]))  # OTLP/JSON, posted by hand
    (tmp_path / "otlp").mkdir()
    (tmp_path / "events").mkdir()
    otel, ours = RunProcess(tmp_path / "otlp"), RunProcess(tmp_path / "events")
    otel.start()
    ours.start()
    try:
        traces = otel.url.replace("/v1/events", "/v1/traces")
        exporter = OTLPSpanExporter(endpoint=traces)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert exporter.export(spans) == SpanExportResult.SUCCESS  # re-sent: counts once
        exporter.shutdown()
        status, body = post(traces, otlp_json(json_request), "application/json")
        assert status == 200 and orjson.loads(body) == {}
        status, body = post(traces, otlp_json(json_request), "application/json")
        assert status == 200

        answer = ours.post([as_event(c) for c in good])
        assert answer["accepted"] == len(good)

        want = len(good)

        def counted(cwd: Path) -> bool:
            rows = [r for r in _stats(cwd) if not r.get("provider")]
            return sum(r["requests"] for r in rows) == want

        wait_for(lambda: counted(tmp_path / "otlp"), timeout=90, what="OTLP stats")
        wait_for(lambda: counted(tmp_path / "events"), timeout=90, what="event stats")
        assert _stats(tmp_path / "otlp") == _stats(tmp_path / "events")
        assert _sql(tmp_path / "otlp", "SELECT count() FROM telemetry.requests").split()[-1] == (
            str(want)
        )
        rejected = _sql(tmp_path / "otlp", "SELECT * FROM telemetry.rejected")
        assert rejected.count("latency_ms") >= 2 and "output_tokens" in rejected
        requests = _sql(tmp_path / "otlp", "SELECT * FROM telemetry.requests")
        for text in (rejected, requests):
            assert SECRET not in text
    finally:
        otel.stop()
        ours.stop()


def test_malformed_exports_are_answered_per_otlp_under_telemetry_run(tmp_path: Path) -> None:
    run = RunProcess(tmp_path)
    run.start()
    try:
        traces = run.url.replace("/v1/events", "/v1/traces")
        status, _ = post(traces, b"\x0a\xff\xff", "application/x-protobuf")
        assert status == 400
        status, _ = post(traces, b"[]", "text/plain")
        assert status == 415
        request = encode(record([*bad_calls(), Call(model="m-ok")]))
        status, body = post(traces, request.SerializeToString(), "application/x-protobuf")
        assert status == 200
        response = ExportTraceServiceResponse()
        response.ParseFromString(body)
        assert response.partial_success.rejected_spans == 3
        assert "span 0: latency_ms" in response.partial_success.error_message

        def stored() -> bool:
            out = _sql(tmp_path, "SELECT model FROM telemetry.requests")
            return "m-ok" in out

        wait_for(stored, timeout=60, what="the valid span stored")
    finally:
        run.stop()


@contextlib.asynccontextmanager
async def collector(config: ServiceConfig) -> AsyncIterator[str]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    url: asyncio.Future[str] = loop.create_future()
    task = loop.create_task(serve(config, on_listening=url.set_result, stop=stop))
    await asyncio.wait([task, url], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield url.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 120)


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` (aiokafka ``ConsumerRecord``s), from the beginning to now."""
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        parts = await asyncio.wait_for(probe.partitions_for(topic), 60)
    finally:
        await probe.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: list[Any] = []
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                for msgs in (await consumer.getmany(*tps, timeout_ms=500)).values():
                    out.extend(msgs)
            return out
    finally:
        await consumer.stop()


async def test_spans_reach_the_topic_as_the_events_they_stand_for(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    good, bad = traffic(), bad_calls()
    spans = record(good + bad)
    topic, dlq = f"{topic_prefix}.requests", f"{topic_prefix}.dlq"
    config = ServiceConfig(
        bootstrap_servers=kafka_bootstrap,
        spool_dir=tmp_path / "spool",
        auth=TokenAuth([hash_token(TOKEN)]),
        port=0,
        topic=topic,
        dlq_topic=dlq,
    )
    async with collector(config) as url:
        unauthorised = OTLPSpanExporter(endpoint=f"{url}/v1/traces")
        assert await asyncio.to_thread(unauthorised.export, spans) == SpanExportResult.FAILURE
        exporter = OTLPSpanExporter(
            endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        for _ in range(2):  # re-sent: the same event ids, deduplicated downstream
            assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
        # The events topic holds batch records: an event per line (docs/record-format.md).
        records = [
            line
            for r in await read_topic(kafka_bootstrap, topic)
            for line in record_lines(r.value, r.headers)
        ]
        dead = [r.value for r in await read_topic(kafka_bootstrap, dlq)]
    events = [orjson.loads(r) for r in records]
    ids = [
        str(event_id(s.context.trace_id.to_bytes(16), s.context.span_id.to_bytes(8)))
        for s in spans[: len(good)]
    ]
    assert sorted(e["event_id"] for e in events) == sorted(ids * 2)
    by_id = {e["event_id"]: e for e in events}
    for call, eid in zip(good, ids, strict=True):
        want = {k: v for k, v in as_event(call).items() if k != "event_id"}
        got = {k: v for k, v in by_id[eid].items() if k != "event_id"}
        assert _instant(got.pop("ts")) == _instant(want.pop("ts"))
        assert got == want
    assert len(dead) == 2 * len(bad)
    assert {orjson.loads(d)["field"] for d in dead} == {"latency_ms", "output_tokens", "model"}
    for raw in records + dead:
        assert SECRET.encode() not in raw
