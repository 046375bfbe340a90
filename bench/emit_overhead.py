"""Cost of ``emit()`` on the request path, p50/p99 in microseconds, against a bare
aiokafka ``producer.send()`` that is not awaited (scheduled with ``ensure_future``, the
cheapest way to hand aiokafka a record without waiting), in the same run.

Goal (issue 4): emit() p50 <= 5 us, p99 <= 50 us.

usage: python bench/emit_overhead.py [--bootstrap HOST:PORT] [-n 200000]
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import broker, footer, make_event, parser, percentile, topic_name
from aiokafka import AIOKafkaProducer

from collector import TelemetryEmitter
from schemas.codec import encode_event, validate_event

CHUNK = 1000  # calls between yields to the loop, like requests between awaits


def stats(ns: list[int]) -> tuple[float, float, float, float]:
    us = sorted(v / 1000 for v in ns)
    return percentile(us, 0.5), percentile(us, 0.99), percentile(us, 0.999), sum(us) / len(us)


async def time_emit(bootstrap: str, events: list, label: str) -> tuple[str, list[int]]:
    with tempfile.TemporaryDirectory() as spool:
        emitter = TelemetryEmitter(
            bootstrap_servers=bootstrap,
            spool_dir=spool,
            topic=topic_name("overhead"),
            buffer_size=len(events) + 1,
        )
        await emitter.start()
        samples: list[int] = []
        clock = time.perf_counter_ns
        emit = emitter.emit
        gc.disable()
        try:
            for i in range(0, len(events), CHUNK):
                for e in events[i : i + CHUNK]:
                    t0 = clock()
                    emit(e)
                    samples.append(clock() - t0)
                gc.enable()
                await asyncio.sleep(0)
                gc.disable()
        finally:
            gc.enable()
        await emitter.close(timeout=60)
        assert emitter.counter("events_spooled") == 0, "benchmark spooled: numbers invalid"
    return label, samples


async def time_bare_send(bootstrap: str, events: list) -> tuple[str, list[int]]:
    topic = topic_name("overhead-bare")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        request_timeout_ms=60_000,
    )
    await producer.start()
    await producer.partitions_for(topic)
    records = [(e.model.encode(), encode_event(e)) for e in events]
    samples: list[int] = []
    pending: list[asyncio.Future] = []
    clock = time.perf_counter_ns
    send = producer.send
    ensure = asyncio.ensure_future
    gc.disable()
    try:
        for i in range(0, len(records), CHUNK):
            for key, value in records[i : i + CHUNK]:
                t0 = clock()
                fut = ensure(send(topic, value=value, key=key))
                samples.append(clock() - t0)
                pending.append(fut)
            gc.enable()
            await asyncio.sleep(0)
            gc.disable()
    finally:
        gc.enable()
    # Only the call cost is measured. Fire-and-forget this fast overwhelms aiokafka's
    # accumulator (sends queue up and time out), so what is still pending is cancelled
    # rather than waited for; the count says how far delivery had got.
    delivered = sum(f.done() and not f.cancelled() and f.exception() is None for f in pending)
    for f in pending:
        f.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await producer.stop()
    return f"bare producer.send(), not awaited ({delivered} delivered by loop end)", samples


async def main() -> None:
    p = parser("cost of emit() on the request path")
    p.add_argument("-n", type=int, default=200_000, help="emit() calls per variant")
    p.add_argument(
        "--bare-n",
        type=int,
        default=20_000,
        help="producer.send() calls (aiokafka's per-message path slows down as un-awaited "
        "sends pile up, so this run is kept shorter)",
    )
    args = p.parse_args()
    n = args.n
    dicts = [make_event(i) for i in range(n)]
    models = [validate_event(make_event(i)) for i in range(n)]
    with broker(args.bootstrap) as bootstrap:
        results = [
            await time_emit(bootstrap, dicts, "emit(dict)"),
            await time_emit(bootstrap, models, "emit(RequestEvent)"),
            await time_bare_send(bootstrap, models[: args.bare_n]),
        ]
    print(
        f"\nper-call cost on the request path, microseconds ({n} emit() calls per variant, "
        f"{min(n, args.bare_n)} send() calls)"
    )
    print(f"{'':58s} {'p50':>7s} {'p99':>7s} {'p99.9':>7s} {'mean':>7s}")
    for label, samples in results:
        p50, p99, p999, mean = stats(samples)
        print(f"{label:58s} {p50:7.2f} {p99:7.2f} {p999:7.2f} {mean:7.2f}")
    p50, p99, _, _ = stats(results[0][1])
    ok = p50 <= 5 and p99 <= 50
    print(f"goal emit() p50 <= 5 us and p99 <= 50 us: {'met' if ok else 'NOT met'}")
    footer()


if __name__ == "__main__":
    asyncio.run(main())
