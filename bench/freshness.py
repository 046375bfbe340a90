"""Freshness: the time from ``emit()`` to the event counted in ``model_stats_7d``.

    python bench/freshness.py [--intervals 5,30] [--duration 60] [--rate 200]
                              [--probes-per-s 2] [--bootstrap HOST:PORT]

Without ``--bootstrap`` (or ``TELEMETRY_KAFKA``) it starts its own broker with
``deploy/local-kafka`` on port 19496 (BENCH_KAFKA_PORT) and stops (and wipes) it at the end.

For each stats interval: fresh topics, one ``telemetry worker --interval S``
subprocess and the Kafka-to-ClickHouse sink in-process (``SinkThread``, a
chDB temp dir). Events are emitted with ``collector.TelemetryEmitter`` (the
gateway library; falls back to a plain aiokafka producer if it is missing) at
a steady background rate over 12 models; every so often a *probe* goes into
a model of its own. ``model_stats_7d`` is polled every 150 ms; a probe's
latency is the time from its ``emit()`` to the first poll that shows its
model with ``requests > 0``. Reports p50/p95/max per interval.

Figures are printed as the last lines. No assertion on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import broker, scratch
from pipeline_util import SinkThread, WorkerProcess, pipeline_settings, settings_env

PARTITIONS = 4
POLL_S = 0.15
VENDORS = ("openai", "anthropic", "google", "meta", "mistral", "qwen")
MODELS = [f"{v}/model-{i}" for v in VENDORS for i in ("large", "small")]
PROVIDERS = ["openai", "azure", "together"]


def event(rng: random.Random, model: str, provider: str) -> dict[str, Any]:
    ttft = rng.lognormvariate(6.5, 1.0)
    return {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "ts": datetime.now(UTC).isoformat(),
        "gateway_id": "gw-bench",
        "region": None,
        "model": model,
        "provider": provider,
        "stream": True,
        "status": "ok",
        "error_type": None,
        "http_status": 200,
        "ttft_ms": round(ttft, 3),
        "latency_ms": round(ttft + rng.lognormvariate(7.5, 0.8), 3),
        "input_tokens": rng.randint(0, 4000),
        "output_tokens": rng.randint(2, 1200),
        "cached_input_tokens": 0,
    }


class Emitter:
    """``collector.TelemetryEmitter`` if importable, else an aiokafka producer."""

    def __init__(self, bootstrap: str, topic: str, dlq_topic: str, spool: Path) -> None:
        self.bootstrap, self.topic, self.dlq_topic, self.spool = bootstrap, topic, dlq_topic, spool
        self.kind = "none"
        self._em: Any = None
        self._producer: Any = None
        self._sends: set[asyncio.Future[Any]] = set()

    async def __aenter__(self) -> Emitter:
        try:
            from collector import TelemetryEmitter
        except ImportError:
            TelemetryEmitter = None
        if TelemetryEmitter is not None:
            self._em = TelemetryEmitter(
                bootstrap_servers=self.bootstrap,
                spool_dir=self.spool,
                topic=self.topic,
                dlq_topic=self.dlq_topic,
            )
            await self._em.__aenter__()
            self.kind = "collector.TelemetryEmitter"
        else:
            from aiokafka import AIOKafkaProducer

            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
            )
            await self._producer.start()
            self.kind = "aiokafka producer (collector.TelemetryEmitter not importable)"
        return self

    def emit(self, doc: dict[str, Any]) -> None:
        if self._em is not None:
            self._em.emit(doc)
        else:
            import orjson

            fut = asyncio.ensure_future(
                self._producer.send(self.topic, orjson.dumps(doc), key=doc["model"].encode())
            )
            self._sends.add(fut)
            fut.add_done_callback(self._sends.discard)

    async def __aexit__(self, *exc: object) -> None:
        if self._em is not None:
            await self._em.__aexit__(None, None, None)
        if self._producer is not None:
            await self._producer.stop()


class Poller(threading.Thread):
    """Polls model_stats_7d for probe models; records when each first shows up."""

    def __init__(self, ch: Any, like: str) -> None:
        super().__init__(daemon=True)
        self.ch = ch
        self.like = like
        self.seen: dict[str, float] = {}
        self.polls = 0
        self.poll_s: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        sql = (
            "SELECT model FROM telemetry.model_stats_7d "
            f"WHERE model LIKE '{self.like}' AND provider = '' AND requests > 0"
        )
        while not self.stop.is_set():
            t0 = time.time()
            try:
                rows = self.ch.query(sql)
            except BaseException as exc:  # surfaced in the report
                self.error = exc
                rows = []
            t1 = time.time()
            self.polls += 1
            self.poll_s.append(t1 - t0)
            for (model,) in rows:
                self.seen.setdefault(model, t1)
            self.stop.wait(max(0.0, POLL_S - (t1 - t0)))


def pct(values: list[float], q: float) -> float:
    """Lower-rank quantile (no interpolation): an observed latency."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))]


async def emit_traffic(
    em: Emitter, run_id: str, duration: float, rate: float, probes_per_s: float
) -> dict[str, float]:
    """Background events at ``rate``/s, plus probes each in a model of its own."""
    rng = random.Random(1)
    probes: dict[str, float] = {}
    tick = 0.05
    t0 = time.perf_counter()
    sent = 0.0
    next_probe = 1.0
    i = 0
    while (elapsed := time.perf_counter() - t0) < duration:
        due = rate * elapsed - sent
        for _ in range(int(due)):
            em.emit(event(rng, rng.choice(MODELS), rng.choice(PROVIDERS)))
            sent += 1
        if elapsed >= next_probe:
            model = f"probe/{run_id}-{i:05d}"
            probes[model] = time.time()
            em.emit(event(rng, model, "probe"))
            i += 1
            next_probe += 1.0 / probes_per_s
        await asyncio.sleep(tick)
    return probes


def run_interval(
    bootstrap: str, dsn: str, ch: Any, work: Path, interval: float, args: argparse.Namespace
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-fresh-{run_id}"
    settings = pipeline_settings(bootstrap, prefix, PARTITIONS)
    env = settings_env(settings, bootstrap, work / f"data-{run_id}")
    worker = WorkerProcess(
        env, work / f"state-{run_id}", work / f"worker-{run_id}.log", interval=interval
    )
    worker.start()
    poller = Poller(ch, f"probe/{run_id}-%")
    info: dict[str, Any] = {"kind": "?", "warm_s": float("nan")}
    probes: dict[str, float] = {}
    sink_error: BaseException | None = None
    failure: BaseException | None = None

    def visible(model: str) -> bool:
        sql = f"SELECT count() FROM telemetry.model_stats_7d WHERE model = '{model}'"
        return bool(ch.query(sql)[0][0])

    async def go() -> None:
        spool = work / f"spool-{run_id}"
        async with Emitter(bootstrap, settings.topic, settings.dlq_topic, spool) as em:
            info["kind"] = em.kind
            # Warm up: a probe all the way through (re-sent every 5 s until it shows up),
            # so worker start-up and topic creation are not measured.
            t_warm = time.perf_counter()
            deadline = t_warm + interval * 2 + 120
            warm = f"warmup/{run_id}"
            next_send = t_warm
            while not await asyncio.to_thread(visible, warm):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"warm-up event not in model_stats_7d; see {worker.log}")
                if time.perf_counter() >= next_send:
                    em.emit(event(random.Random(0), warm, "probe"))
                    next_send += 5.0
                await asyncio.sleep(0.2)
            info["warm_s"] = time.perf_counter() - t_warm
            print(f"  warm-up visible after {info['warm_s']:.1f}s", flush=True)
            poller.start()
            probes.update(
                await emit_traffic(em, run_id, args.duration, args.rate, args.probes_per_s)
            )

    try:
        with SinkThread(settings, dsn, bootstrap, f"{prefix}-sink") as sink:
            try:
                asyncio.run(go())
                deadline = time.time() + interval + 60
                while len(poller.seen) < len(probes) and time.time() < deadline:
                    time.sleep(0.2)
            except Exception as exc:  # reported with the figures; other intervals still run
                failure = exc
            finally:
                poller.stop.set()
                if poller.is_alive():
                    poller.join(10)
            sink_error = sink.error
    finally:
        worker.stop()
    lat = [poller.seen[m] - t for m, t in probes.items() if m in poller.seen]
    return {
        "interval": interval,
        "kind": info["kind"],
        "probes": len(probes),
        "visible": len(lat),
        "lat": lat,
        "warm_s": info["warm_s"],
        "polls": poller.polls,
        "poll_p50": pct(poller.poll_s, 0.5) if poller.poll_s else 0.0,
        "error": failure or poller.error or sink_error,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--intervals", default="5,30", help="worker --interval values, comma-separated")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of traffic per interval")
    ap.add_argument("--rate", type=float, default=200.0, help="background events per second")
    ap.add_argument("--probes-per-s", type=float, default=2.0)
    ap.add_argument("--bootstrap", default=os.environ.get("TELEMETRY_KAFKA") or None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, chDB)")
    args = ap.parse_args()
    intervals = [float(x) for x in args.intervals.split(",") if x.strip()]

    results = []
    with broker(args.bootstrap) as bootstrap, scratch("bench-freshness-", keep=args.keep) as work:
        from processors.clickhouse import connect
        from processors.migrate import migrate

        dsn = f"chdb://{work / 'chdb'}"
        ch = connect(dsn)
        migrate(ch, requests_ttl_days=30)
        for interval in intervals:
            print(f"interval {interval:g}s: {args.duration:g}s of traffic ...", flush=True)
            results.append(run_interval(bootstrap, dsn, ch, work, interval, args))

    print()
    print("== bench/freshness.py ==")
    print(f"cpu_count: {os.cpu_count()}")
    print(f"load average (1/5 min) at the end: {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f}")
    print(
        f"traffic: {args.rate:g} events/s background over {len(MODELS)} models for "
        f"{args.duration:g}s, {args.probes_per_s:g} probes/s each in its own model; "
        f"emitter: {results[0]['kind'] if results else '?'}"
    )
    print(f"poll: model_stats_7d every {POLL_S * 1000:.0f} ms (chDB, in-process sink)")
    for r in results:
        lat = r["lat"]
        line = f"interval {r['interval']:g}s: {r['visible']}/{r['probes']} probes visible"
        if lat:
            goal = r["interval"] + 5
            p95 = pct(lat, 0.95)
            line += (
                f"; emit->visible p50 {pct(lat, 0.5):.2f}s, p95 {p95:.2f}s, max {max(lat):.2f}s, "
                f"min {min(lat):.2f}s; goal p95 < {goal:g}s: {'met' if p95 < goal else 'NOT met'}"
            )
        line += (
            f" (warm-up {r['warm_s']:.1f}s; median poll {r['poll_p50'] * 1000:.0f} ms, "
            f"{r['polls']} polls)"
        )
        if r["error"]:
            line += f"; error: {r['error']!r}"
        print(line)


if __name__ == "__main__":
    main()
