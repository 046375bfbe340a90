"""Worker memory and table size with 1,000 (model, provider) keys x 168 hourly buckets.

    python bench/state_size.py [--models 250] [--providers 4] [--per-hour 2]
                               [--interval 30] [--bootstrap HOST:PORT]

Without ``--bootstrap`` (or ``TELEMETRY_KAFKA``) it starts its own broker with
``deploy/local-kafka`` on port 19496 (BENCH_KAFKA_PORT) and stops (and wipes) it at the end.

Feeds ``per-hour`` events into every hour of the 168-hour window for every
(model, provider) key (default 250 models x 4 providers x 168 h x 2 = 336,000
events), runs one ``telemetry worker`` subprocess (fresh app id and state
dir), waits until its consumer group has committed every offset and it has
published once after that, then measures:

- RSS of the worker process (psutil; peak from /proc VmHWM where available),
- the worker's state dir on disk (RocksDB tables; a ``du``),
- the changelog topics (messages and key+value bytes, read back from Kafka).

Figures are printed as the last lines. No assertion on sizes or timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import psutil
from _common import broker, compact, scratch
from pipeline_util import WorkerProcess, pipeline_settings, settings_env

from processors.aggregate import hour_of, hour_start

PARTITIONS = 4
PROVIDERS = ["openai", "azure", "together", "fireworks", "bedrock", "vertex", "deepinfra"]
ERRORS = ["provider_error", "timeout", "rate_limited", "client_error", "gateway_error", "cancelled"]


def make_values(
    models: int, providers: int, hours: int, per_hour: int, now: datetime, seed: int
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: ``per_hour`` events in each of the last ``hours`` hours per key."""
    rng = random.Random(seed)
    current = hour_of(now)
    out = []
    for m in range(models):
        model = f"vendor-{m % 17}/model-{m:04d}"
        key = model.encode()
        for provider in PROVIDERS[:providers]:
            for k in range(hours):
                start = hour_start(current - k)
                room = min(3600.0, (now - start).total_seconds())
                for _ in range(per_hour):
                    failed = rng.random() < 0.06
                    ttft = rng.lognormvariate(6.5, 1.0)
                    latency = ttft + rng.lognormvariate(7.5, 0.8)
                    doc = {
                        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        "schema_version": 1,
                        "ts": (start + timedelta(seconds=rng.uniform(0, room))).isoformat(),
                        "gateway_id": "gw-1",
                        "region": None,
                        "model": model,
                        "provider": provider,
                        "stream": True,
                        "status": "error" if failed else "ok",
                        "error_type": rng.choice(ERRORS) if failed else None,
                        "http_status": 500 if failed else 200,
                        "ttft_ms": None if failed else round(ttft, 3),
                        "latency_ms": round(latency, 3),
                        "input_tokens": rng.randint(0, 4000),
                        "output_tokens": rng.randint(0, 1200),
                        "cached_input_tokens": 0,
                    }
                    out.append((key, compact(orjson.dumps(doc))))
    rng.shuffle(out)  # arrival order is not key order
    return out


async def produce(bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]]) -> int:
    """Send the events as our producers do: batch records per partition, rounds of 10,000.

    Returns the number of Kafka records written (what the group's offsets count).
    """
    from aiokafka import AIOKafkaProducer

    from schemas.event_record import RECORD_HEADERS, pack_lines, partition_for

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        compression_type="lz4",
    )
    await producer.start()
    records = 0
    try:
        for lo in range(0, len(pairs), 10_000):
            per: dict[int, list[bytes]] = {}
            for key, value in pairs[lo : lo + 10_000]:
                per.setdefault(partition_for(key, PARTITIONS), []).append(value)
            futures = []
            for p, lines in per.items():
                for value in pack_lines(lines):
                    futures.append(
                        await producer.send(topic, value, partition=p, headers=RECORD_HEADERS)
                    )
            await asyncio.gather(*futures)
            records += len(futures)
    finally:
        await producer.stop()
    return records


async def committed(bootstrap: str, group: str, topic: str) -> int:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        offs = await admin.list_consumer_group_offsets(group, partitions=tps)
        return sum(max(om.offset, 0) for om in offs.values())
    except KafkaError as exc:
        if getattr(exc, "retriable", False):
            return 0
        raise
    finally:
        await admin.close()


async def changelog_sizes(bootstrap: str, app_id: str) -> dict[str, tuple[int, int]]:
    """(messages, key+value bytes) of each changelog topic of the app, read back."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        topics = [t for t in await c.topics() if t.startswith(app_id) and t.endswith("changelog")]
        out: dict[str, tuple[int, int]] = {}
        for t in topics:
            tps = [TopicPartition(t, p) for p in range(PARTITIONS)]
            ends = await c.end_offsets(tps)
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            left = {tp for tp, e in ends.items() if e > 0}
            n = size = 0
            while left:
                for tp, msgs in (await c.getmany(timeout_ms=1000)).items():
                    n += len(msgs)
                    size += sum(len(m.key or b"") + len(m.value or b"") for m in msgs)
                    if msgs and msgs[-1].offset + 1 >= ends[tp]:
                        left.discard(tp)
            out[t[len(app_id) + 1 :]] = (n, size)
        return out
    finally:
        await c.stop()


def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def vm_hwm(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) * 1024 if m else None


def publications(log: Path) -> list[tuple[int, int, int]]:
    """(counted, outside_window, stats rows) of every publication logged so far."""
    text = log.read_bytes() if log.exists() else b""
    return [
        (int(c), int(o), int(r))
        for r, c, o in re.findall(
            rb"published (\d+) stats rows.*?counted=(\d+).*?outside_window=(\d+)", text
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=250)
    ap.add_argument("--providers", type=int, default=4, help=f"at most {len(PROVIDERS)}")
    ap.add_argument("--hours", type=int, default=168)
    ap.add_argument("--per-hour", type=int, default=2, help="events per key and hour")
    ap.add_argument("--interval", type=float, default=30.0, help="worker --interval (seconds)")
    ap.add_argument("--bootstrap", default=os.environ.get("TELEMETRY_KAFKA") or None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (state, log)")
    args = ap.parse_args()

    with broker(args.bootstrap) as bootstrap, scratch("bench-state-", keep=args.keep) as work:
        figures = run(args, bootstrap, work)
    print()
    for line in figures:
        print(line)


def run(args: argparse.Namespace, bootstrap: str, work: Path) -> list[str]:
    prefix = f"bench-state-{uuid.uuid4().hex[:8]}"
    settings = pipeline_settings(bootstrap, prefix, PARTITIONS)
    keys = args.models * args.providers
    now = datetime.now(UTC)
    print(f"generating {keys} keys x {args.hours} h x {args.per_hour} events ...", flush=True)
    pairs = make_values(args.models, args.providers, args.hours, args.per_hour, now, args.seed)
    n = len(pairs)
    print(f"producing {n:,} events to {settings.topic} ...", flush=True)
    records = asyncio.run(produce(bootstrap, settings.topic, pairs))
    del pairs

    env = settings_env(settings, bootstrap, work / "data")
    log = work / "worker.log"
    state = work / "state"
    worker = WorkerProcess(env, state, log, interval=args.interval)
    t0 = time.perf_counter()
    worker.start()
    assert worker.proc is not None
    proc = psutil.Process(worker.proc.pid)
    rss_max = 0
    try:
        print("worker consuming ...", flush=True)
        done_at = None
        while time.perf_counter() - t0 < args.timeout:
            if not worker.alive():
                raise RuntimeError(f"the worker exited early; see {log}")
            rss_max = max(rss_max, proc.memory_info().rss)
            if asyncio.run(committed(bootstrap, settings.worker_id, settings.topic)) >= records:
                done_at = time.perf_counter()
                break
            time.sleep(1.0)
        if done_at is None:
            raise TimeoutError(f"the worker did not consume {n:,} events in {args.timeout:.0f}s")
        print("waiting for a publication after the last commit ...", flush=True)
        seen_pubs = len(publications(log))
        while time.perf_counter() - done_at < args.interval * 3 + 60:
            pubs = publications(log)
            if len(pubs) > seen_pubs and pubs[-1][0] + pubs[-1][1] >= n:
                break
            rss_max = max(rss_max, proc.memory_info().rss)
            time.sleep(0.5)
        published_at = time.perf_counter()
        time.sleep(1.0)  # let RocksDB settle its memtables
        rss = proc.memory_info().rss
        hwm = vm_hwm(proc.pid)
        uss = getattr(proc.memory_full_info(), "uss", None)
        disk = du(state)
        tables: dict[str, int] = {}
        for p in state.rglob("*.db"):
            if p.is_dir():  # <table>-<partition>.db
                name = p.name.removesuffix(".db").rsplit("-", 1)[0]
                tables[name] = tables.get(name, 0) + du(p)
    finally:
        worker.stop()
    pubs = publications(log)
    counted, outside, rows = pubs[-1] if pubs else (0, 0, 0)
    sizes = asyncio.run(changelog_sizes(bootstrap, settings.worker_id))

    mib = 2**20
    figures = [
        "== bench/state_size.py ==",
        f"cpu_count: {os.cpu_count()}",
        f"keys: {keys:,} (model, provider) = {args.models} models x {args.providers} providers; "
        f"{args.hours} hourly buckets each; {args.per_hour} events per key-hour",
        f"events: {n:,}; worker counted {counted:,}, outside window {outside:,} "
        f"(an hour boundary during the run moves the oldest hour out)",
        f"worker consumed everything in {done_at - t0:.1f} s ({n / (done_at - t0):,.0f} events/s "
        f"incl. start-up); last publication {published_at - done_at:.1f} s later, "
        f"{rows:,} stats rows",
        f"worker RSS after publishing: {rss / mib:.0f} MB (USS {(uss or 0) / mib:.0f} MB); "
        f"peak RSS {(hwm or rss_max) / mib:.0f} MB"
        f"{' (VmHWM)' if hwm else ' (sampled)'}",
        f"state dir on disk: {disk / mib:.1f} MB"
        + (
            " (" + ", ".join(f"{k}: {v / mib:.1f} MB" for k, v in sorted(tables.items())) + ")"
            if tables
            else ""
        ),
    ]
    for t, (msgs, size) in sorted(sizes.items()):
        figures.append(f"changelog {t}: {msgs:,} messages, {size / mib:.1f} MB key+value")
    peak = hwm or rss_max
    figures.append(
        # Issue 12's goal: at most 300 MB (aim 100 MB) for 1,000 keys x 168 h.
        f"goal RSS <= 300 MB: {'met' if max(rss, peak) <= 300 * mib else 'NOT met'} "
        f"(after publishing {rss / mib:.0f} MB, peak {peak / mib:.0f} MB)"
    )
    return figures


if __name__ == "__main__":
    main()
