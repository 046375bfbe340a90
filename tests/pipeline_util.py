"""Helpers for integration tests: synthetic traffic with known answers, workers as processes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from processors.kafka_io import ensure_topics
from schemas.codec import validate_event
from schemas.event import RequestEvent
from schemas.settings import Settings

MODELS = [
    "openai/gpt-4.1-mini",
    "openai/gpt-4.1",
    "anthropic/claude-sonnet-4",
    "google/gemini-2.5-flash",
    "meta-llama/llama-3.3-70b",
    "mistral/mistral-large",
]
PROVIDERS = ["openai", "azure", "together", "fireworks"]
ERRORS = ["provider_error", "timeout", "rate_limited", "client_error", "gateway_error", "cancelled"]


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid event as a gateway would send it; override any field."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "gateway_id": "gw-test-1",
        "region": "eu-west",
        "model": "openai/gpt-4.1-mini",
        "provider": "openai",
        "stream": True,
        "status": "ok",
        "error_type": None,
        "http_status": 200,
        "ttft_ms": 420.0,
        "latency_ms": 2300.0,
        "input_tokens": 120,
        "output_tokens": 350,
        "cached_input_tokens": 0,
    }
    event.update(overrides)
    return event


def synthetic_events(n: int, *, seed: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """Events over the last 6 days with heavy-tailed TTFTs and every error type."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    out = []
    for _ in range(n):
        model = rng.choice(MODELS)
        provider = rng.choice(PROVIDERS[: 2 + MODELS.index(model) % 3])
        ts = now - timedelta(seconds=rng.uniform(0, 6 * 86400))
        failed = rng.random() < 0.06
        ttft = rng.lognormvariate(6.5, 1.0)
        latency = ttft + rng.lognormvariate(7.5, 0.8)
        out.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "schema_version": 1,
                "ts": ts.isoformat(),
                "gateway_id": f"gw-{rng.randint(1, 5)}",
                "region": rng.choice(["eu-west", "us-east", None]),
                "model": model,
                "provider": provider,
                "stream": rng.random() < 0.8,
                "status": "error" if failed else "ok",
                "error_type": rng.choice(ERRORS) if failed else None,
                "http_status": 500 if failed else 200,
                "ttft_ms": None if failed and rng.random() < 0.5 else round(ttft, 3),
                "latency_ms": round(latency, 3),
                "input_tokens": rng.randint(0, 4000),
                "output_tokens": rng.randint(0, 1200),
                "cached_input_tokens": 0,
            }
        )
    return out


def with_duplicates(events: list[dict[str, Any]], share: float, seed: int) -> list[dict[str, Any]]:
    """Append resent copies of some events (the same event_id), shuffled in."""
    rng = random.Random(seed)
    dups = [dict(e) for e in rng.sample(events, int(len(events) * share))]
    out = events + dups
    rng.shuffle(out)
    return out


@dataclass(frozen=True)
class Expected:
    requests: dict[tuple[str, str], int]
    errors: dict[tuple[str, str], int]
    tokens: dict[tuple[str, str], int]


def expected_counts(unique: list[dict[str, Any]]) -> Expected:
    """Exact counts per (model, provider) and per (model, ''), from docs/definitions.md directly."""
    req: Counter[tuple[str, str]] = Counter()
    err: Counter[tuple[str, str]] = Counter()
    tok: Counter[tuple[str, str]] = Counter()
    for e in unique:
        for key in ((e["model"], e["provider"]), (e["model"], "")):
            req[key] += 1
            tok[key] += e["input_tokens"] + e["output_tokens"]
            if e["status"] == "error" and e["error_type"] not in ("client_error", "cancelled"):
                err[key] += 1
    return Expected(dict(req), dict(err), dict(tok))


def as_events(docs: list[dict[str, Any]]) -> list[RequestEvent]:
    return [validate_event(d) for d in docs]


def settings_for(prefix: str, **extra: Any) -> Settings:
    return Settings(
        topic=f"{prefix}.requests",
        dlq_topic=f"{prefix}.dlq",
        stats_topic=f"{prefix}.stats",
        hourly_topic=f"{prefix}.hourly",
        worker_id=f"{prefix}-worker",
        **extra,
    )


def pipeline_settings(bootstrap: str, prefix: str, partitions: int) -> Settings:
    """Settings of a run of its own, with its four topics created on the broker."""
    settings = settings_for(prefix, partitions=partitions)
    topics = [settings.topic, settings.dlq_topic, settings.stats_topic, settings.hourly_topic]
    asyncio.run(ensure_topics(bootstrap, topics, partitions=partitions))
    return settings


def settings_env(settings: Settings, bootstrap: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TELEMETRY_KAFKA=bootstrap,
        TELEMETRY_TOPIC=settings.topic,
        TELEMETRY_DLQ_TOPIC=settings.dlq_topic,
        TELEMETRY_STATS_TOPIC=settings.stats_topic,
        TELEMETRY_HOURLY_TOPIC=settings.hourly_topic,
        TELEMETRY_WORKER_ID=settings.worker_id,
        TELEMETRY_DATA_DIR=str(data_dir),
        TELEMETRY_WORKER_SESSION_TIMEOUT_S="6",
        TELEMETRY_WORKER_REREAD_MAX=str(settings.worker_reread_max),
    )
    return env


class WorkerProcess:
    """`telemetry worker` in a subprocess, killed or stopped on demand."""

    def __init__(self, env: dict[str, str], state_dir: Path, log: Path, interval: float = 2.0):
        self.env = env
        self.state_dir = state_dir
        self.log = log
        self.interval = interval
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "telemetry.cli",
                "worker",
                "--interval",
                str(self.interval),
                "--state-dir",
                str(self.state_dir),
                "--loglevel",
                "info",
            ],
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``condition`` until truthy; fail with ``what`` and its last value on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class SinkThread:
    """The Kafka-to-ClickHouse sink on its own thread and event loop, for sync tests."""

    def __init__(self, settings: Settings, dsn: str, bootstrap: str, group: str) -> None:
        import asyncio
        import threading

        from processors.clickhouse import connect
        from processors.sinks.kafka_sink import SinkCounters

        self.counters = SinkCounters()
        self._ch = connect(dsn)
        self._settings = settings
        self._bootstrap = bootstrap
        self._group = group
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        import asyncio

        from processors.sinks.kafka_sink import run_sink

        asyncio.set_event_loop(self._loop)

        async def go() -> None:
            self._stop = asyncio.Event()
            await run_sink(
                self._settings,
                self._ch,
                bootstrap=self._bootstrap,
                group_id=self._group,
                stop=self._stop,
                counters=self.counters,
            )

        try:
            self._loop.run_until_complete(go())
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> SinkThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def published_counts(ch: Any) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(requests, errors, traffic_tokens) per (model, provider) from model_stats_7d."""
    rows = ch.query(
        "SELECT model, provider, requests, errors, traffic_tokens FROM telemetry.model_stats_7d"
    )
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def wanted_counts(unique: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int, int]]:
    exp = expected_counts(unique)
    return {k: (exp.requests[k], exp.errors.get(k, 0), exp.tokens[k]) for k in exp.requests}


def wait_exact(ch: Any, want: dict[tuple[str, str], tuple[int, int, int]], *, what: str) -> None:
    """Wait for model_stats_7d to equal ``want``; on timeout, say which keys differ."""
    try:
        wait_for(lambda: published_counts(ch) == want, timeout=300, what=what)
    except AssertionError as exc:
        got = published_counts(ch)
        bad = [
            (k, got.get(k), want.get(k))
            for k in sorted(set(got) | set(want))
            if got.get(k) != want.get(k)
        ]
        raise AssertionError(f"{exc}; {len(bad)} keys differ, e.g. {bad[:3]}") from None


# Rows as ``model_stats_7d`` gives them back (naive UTC times), for export and display tests.
AS_OF = datetime(2025, 5, 1, 12, 0, 30, 123000, tzinfo=UTC)
WINDOW_START = datetime(2025, 4, 24, 13, tzinfo=UTC)


def stats_row(model: str = "openai/gpt-4.1-mini", provider: str = "", **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "as_of": AS_OF.replace(tzinfo=None),  # as ClickHouse hands it back
        "window_start": WINDOW_START.replace(tzinfo=None),
        "requests": 3000,
        "input_tokens": 200_000,
        "output_tokens": 488_812,
        "traffic_tokens": 688_812,
        "errors": 87,
        "error_denominator": 3000,
        "error_rate": 0.029,
        "ttft_samples": 2900,
        "ttft_p50_ms": 2297.0,
        "ttft_p95_ms": 10900.0,
        "ttft_p99_ms": 15000.0,
        "output_tps_samples": 2800,
        "output_tps_p50": 175.2,
    }
    row.update(kw)
    return row


async def read_partitions(bootstrap: str, topic: str, parts: list[int]) -> dict[int, list[Any]]:
    """Every record of these partitions of ``topic``, in offset order, up to the end now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[Any]] = {p: [] for p in parts}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(*tps, timeout_ms=1000)).items():
                out[tp.partition].extend(records)
        return out
    finally:
        await consumer.stop()
