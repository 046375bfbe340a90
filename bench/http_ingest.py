"""Events per second through the HTTP ingest service, batches of 1,000, one service process.

The service runs in its own process (``collector.server.serve``, as ``telemetry collector``
does); this process is the load generator, posting pre-built NDJSON (and JSON array)
batches over a few keep-alive connections. A 200 means the events are durable (acked by
Kafka or in the spool), so the rate is a delivered rate; the spool is checked to be empty.

Goal (issue 4): at least 50,000 events/s on one process.

usage: python bench/http_ingest.py [--bootstrap HOST:PORT] [--batches 300] [--concurrency 8]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

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


async def post_batches(url: str, bodies: list[bytes], content_type: str, concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    queue = list(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with http.post(f"{url}/v1/events", data=body, headers=headers) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"{resp.status}: {await resp.text()}")
                    doc = await resp.json()
                    if doc["accepted"] != BATCH:
                        raise RuntimeError(f"unexpected answer {doc}")

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
    args = p.parse_args()
    events = [make_event(i) for i in range(args.batches * BATCH)]
    ndjson = [
        b"\n".join(orjson.dumps(e) for e in events[i : i + BATCH])
        for i in range(0, len(events), BATCH)
    ]
    arrays = [orjson.dumps(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
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
            await post_batches(
                url, ndjson[:20], "application/x-ndjson", args.concurrency
            )  # warm-up
            t_nd = await post_batches(url, ndjson, "application/x-ndjson", args.concurrency)
            t_js = await post_batches(url, arrays, "application/json", args.concurrency)
            spooled, sent = await spool_records(url)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    n = len(events)
    print(f"\n{args.batches} batches of {BATCH} events, {args.concurrency} connections")
    print(f"NDJSON body:      {n / t_nd:10,.0f} events/s  ({args.batches / t_nd:6.1f} requests/s)")
    print(f"JSON array body:  {n / t_js:10,.0f} events/s  ({args.batches / t_js:6.1f} requests/s)")
    print(f"acked by Kafka: {sent:,.0f}; left in the spool: {spooled:,.0f}")
    best = max(n / t_nd, n / t_js)
    print(f"goal >= 50,000 events/s on one process: {'met' if best >= 50_000 else 'NOT met'}")
    footer()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_main(*sys.argv[2:5])
    else:
        asyncio.run(main())
