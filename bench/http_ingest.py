"""Events per second through the HTTP ingest service, batches of 1,000, one service process.

The service runs in its own process (``collector.server.serve``, as ``telemetry collector``
does); this process is the load generator, posting pre-built NDJSON (and JSON array)
batches over a few keep-alive connections. A 200 means the events are durable (acked by
Kafka or in the spool), so the rate is a delivered rate; the spool is checked to be empty.

Goal (issue 4): at least 50,000 events/s on one process.

``--otlp`` also posts the same events as OTLP/HTTP protobuf trace exports (one GenAI
span per event, 1,000 per export) to ``/v1/traces`` and prints the ratio of the two
rates (goal, issue 15: spans at least half as fast as events).

usage: python bench/http_ingest.py [--bootstrap HOST:PORT] [--batches 300] [--concurrency 8]
                                   [--otlp]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import broker, footer, make_event, parser, topic_name

from collector.auth import TokenAuth, hash_token

TOKEN = "bench-token"
BATCH = 1000


def serve_main(bootstrap: str, spool_dir: str, topic: str) -> None:
    from collector.server import ServiceConfig, serve

    config = ServiceConfig(
        bootstrap_servers=bootstrap,
        spool_dir=Path(spool_dir),
        auth=TokenAuth([hash_token(TOKEN)]),
        port=0,
        topic=topic,
        dlq_topic=f"{topic}.dlq",
    )
    asyncio.run(serve(config, on_listening=lambda url: print(f"LISTENING {url}", flush=True)))


def as_span(event: dict[str, Any], i: int) -> Any:
    """The event as the GenAI span an instrumented gateway would export."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    start = int(datetime.fromisoformat(event["ts"]).timestamp() * 1e9)
    attrs = {
        "gen_ai.operation.name": AnyValue(string_value="chat"),
        "gen_ai.request.model": AnyValue(string_value=event["model"]),
        "gen_ai.provider.name": AnyValue(string_value=event["provider"]),
        "gen_ai.usage.input_tokens": AnyValue(int_value=event["input_tokens"]),
        "gen_ai.usage.output_tokens": AnyValue(int_value=event["output_tokens"]),
        "gen_ai.response.time_to_first_chunk": AnyValue(double_value=event["ttft_ms"] / 1000),
        "http.response.status_code": AnyValue(int_value=200),
    }
    return Span(
        trace_id=os.urandom(16),
        span_id=(i + 1).to_bytes(8, "big"),
        name=f"chat {event['model']}",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(event["latency_ms"] * 1e6),
        attributes=[KeyValue(key=k, value=v) for k, v in attrs.items()],
    )


def trace_exports(events: list[dict[str, Any]]) -> list[bytes]:
    """Protobuf ExportTraceServiceRequests of ``BATCH`` spans, one resource each."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    out = []
    for start in range(0, len(events), BATCH):
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value="gw-bench-1"))
        )
        rs.resource.attributes.append(
            KeyValue(key="cloud.region", value=AnyValue(string_value="eu-west"))
        )
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        ss.spans.extend(as_span(e, start + j) for j, e in enumerate(events[start : start + BATCH]))
        out.append(request.SerializeToString())
    return out


def _cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of a process so far, all threads."""
    times = process.cpu_times()
    return float(times.user + times.system)


def _check_events(status: int, body: bytes) -> None:
    doc = orjson.loads(body)
    if status != 200 or doc["accepted"] != BATCH:
        raise RuntimeError(f"unexpected answer {status} {doc}")


def _check_traces(status: int, body: bytes) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    answer = ExportTraceServiceResponse()
    answer.ParseFromString(body)
    if status != 200 or answer.HasField("partial_success"):
        raise RuntimeError(f"unexpected answer {status} {answer}")


async def post_batches(
    url: str, bodies: list[bytes], content_type: str, concurrency: int, path: str = "/v1/events"
) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    check = _check_traces if path == "/v1/traces" else _check_events
    queue = list(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with http.post(f"{url}{path}", data=body, headers=headers) as resp:
                    check(resp.status, await resp.read())

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


async def spool_records(url: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    values = {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.labels
    }
    return values["telemetry_emitter_spool_records"], values["telemetry_emitter_events_sent_total"]


async def main() -> None:
    p = parser("events per second through the HTTP ingest service")
    p.add_argument("--batches", type=int, default=300, help="batches of 1,000 per run")
    p.add_argument("--concurrency", type=int, default=8, help="connections posting at once")
    p.add_argument(
        "--otlp", action="store_true", help="also post the same events as OTLP spans to /v1/traces"
    )
    args = p.parse_args()
    events = [make_event(i) for i in range(args.batches * BATCH)]
    ndjson = [
        b"\n".join(orjson.dumps(e) for e in events[i : i + BATCH])
        for i in range(0, len(events), BATCH)
    ]
    arrays = [orjson.dumps(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
    exports = trace_exports(events) if args.otlp else []
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as spool:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", bootstrap, spool, topic_name("http")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("LISTENING "):
                sys.exit(f"service did not start: {line!r}")
            url = line.split()[1]
            service = psutil.Process(proc.pid)
            await post_batches(
                url, ndjson[:20], "application/x-ndjson", args.concurrency
            )  # warm-up
            cpu0 = _cpu(service)
            t_nd = await post_batches(url, ndjson, "application/x-ndjson", args.concurrency)
            cpu1 = _cpu(service)
            t_js = await post_batches(url, arrays, "application/json", args.concurrency)
            cpu2 = _cpu(service)
            t_otlp = 0.0
            if exports:
                proto = "application/x-protobuf"
                await post_batches(url, exports[:20], proto, args.concurrency, "/v1/traces")
                t_otlp = await post_batches(url, exports, proto, args.concurrency, "/v1/traces")
            spooled, sent = await spool_records(url)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    n = len(events)
    print(f"\n{args.batches} batches of {BATCH} events, {args.concurrency} connections")
    print(f"NDJSON body:      {n / t_nd:10,.0f} events/s  ({args.batches / t_nd:6.1f} requests/s)")
    print(f"JSON array body:  {n / t_js:10,.0f} events/s  ({args.batches / t_js:6.1f} requests/s)")
    # The service's own CPU time (all its threads): what a request costs it, whatever
    # else the machine runs; events per CPU-second is the rate one free core would allow.
    for label, cpu in (("NDJSON", cpu1 - cpu0), ("JSON array", cpu2 - cpu1)):
        print(
            f"service CPU, {label + ':':11s} {cpu / n * 1e6:6.2f} us/event "
            f"({n / cpu:10,.0f} events per CPU-second)"
        )
    best = max(n / t_nd, n / t_js)
    if t_otlp:
        otlp_rate = n / t_otlp
        print(
            f"OTLP protobuf:    {otlp_rate:10,.0f} events/s  ({args.batches / t_otlp:6.1f} "
            "requests/s, one span per event)"
        )
        ratio = otlp_rate / (n / t_nd)
        verdict = "met" if ratio >= 0.5 else "NOT met"
        print(f"/v1/traces / /v1/events (NDJSON): {ratio:.2f}x  (goal >= 0.5x: {verdict})")
    print(f"acked by Kafka: {sent:,.0f}; left in the spool: {spooled:,.0f}")
    print(f"goal >= 50,000 events/s on one process: {'met' if best >= 50_000 else 'NOT met'}")
    footer()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_main(*sys.argv[2:5])
    else:
        asyncio.run(main())
