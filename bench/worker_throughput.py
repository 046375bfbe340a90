"""Events per second through one Faust worker, against a bare aiokafka consumer.

    python bench/worker_throughput.py [--events 300000] [--bootstrap HOST:PORT]
                                      [--profile {py-spy,none}] [--keep]

Without ``--bootstrap`` (or ``TELEMETRY_KAFKA``) it starts its own broker with
``deploy/local-kafka`` on port 19496 (BENCH_KAFKA_PORT) and stops (and wipes) it at the end.

1. Pre-produces N events (12 models x 3 providers, timestamps over the last 6
   days) to a fresh 4-partition topic as our producers write them: batch
   records (docs/record-format.md), each round of ``ROUND_EVENTS`` events
   packed per partition into NDJSON records of at most ``MAX_RECORD_BYTES``.
   The same events also go, one event per record keyed by model (the format
   of producers of other teams), to a second topic.
2. Bare consumers, no group, each reading every partition from the start:
   one splits the batch records into lines and runs ``decode_event`` on each;
   the other reads the one-event topic and runs only ``orjson.loads`` per
   record (the floor any consumer of one-event records pays).
3. Worker: ``telemetry worker --interval 5`` as a subprocess with a fresh app id
   and state dir. Its consumer group's committed offsets are polled; the run is
   done when they equal the end offsets. Committed offsets count records, so
   they are turned into events with the offsets the producer was given back.
   Gross rate counts from process start; net rate counts from the first commit
   (start-up, recovery and the first batch excluded) to the last.
4. Profile (default when ``py-spy`` is installed): a second worker with a fresh
   app id over the same topic, sampled by ``py-spy record`` (100 Hz), and the
   samples folded into where the worker's time goes.

Figures are printed as the last lines. No assertion on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zlib
from bisect import bisect_left
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import psutil
from _common import broker, compact, scratch
from pipeline_util import WorkerProcess, pipeline_settings, settings_env

from processors.kafka_io import ensure_topics
from schemas.codec import decode_event
from schemas.event_record import RECORD_HEADERS, pack_lines, partition_for, record_lines

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
#: Events packed per round of the pre-produce step, as a gateway's emitter packs
#: what piled up during a linger: with 4 partitions, a record per partition per
#: few thousand events.
ROUND_EVENTS = 10_000

VENDORS = ["openai", "anthropic", "google", "meta-llama", "mistral", "qwen"]
MODELS = [f"{v}/model-{i}" for v in VENDORS for i in ("large", "small")]  # 12 models
PROVIDERS = ["openai", "azure", "together", "fireworks", "bedrock", "vertex", "deepinfra"]
ERRORS = ["provider_error", "timeout", "rate_limited", "client_error", "gateway_error", "cancelled"]


# --------------------------------------------------------------------------- traffic


def make_docs(
    n: int, *, seed: int, now: datetime, spread_hours: float = 144.0
) -> list[dict[str, Any]]:
    """Realistic events: 12 models x 3 providers, heavy-tailed TTFTs, every error type."""
    import random

    rng = random.Random(seed)
    providers = {m: rng.sample(PROVIDERS, 3) for m in MODELS}
    weights = [1.0 / (i + 1) for i in range(len(MODELS))]  # a few hot models, a long tail
    span = spread_hours * 3600
    out = []
    for model in rng.choices(MODELS, weights=weights, k=n):
        failed = rng.random() < 0.06
        ttft = rng.lognormvariate(6.5, 1.0)
        latency = ttft + rng.lognormvariate(7.5, 0.8)
        input_tokens = rng.randint(0, 4000)
        out.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "schema_version": 1,
                "ts": (now - timedelta(seconds=rng.uniform(0, span))).isoformat(),
                "gateway_id": f"gw-{rng.randint(1, 5)}",
                "region": rng.choice(["eu-west", "us-east", None]),
                "model": model,
                "provider": rng.choice(providers[model]),
                "stream": rng.random() < 0.8,
                "status": "error" if failed else "ok",
                "error_type": rng.choice(ERRORS) if failed else None,
                "http_status": 500 if failed else 200,
                "ttft_ms": None if failed and rng.random() < 0.5 else round(ttft, 3),
                "latency_ms": round(latency, 3),
                "input_tokens": input_tokens,
                "output_tokens": rng.randint(0, 1200),
                "cached_input_tokens": rng.randint(0, input_tokens // 4),
            }
        )
    return out


def compression() -> str | None:
    """The emitter's choice (zstd, else lz4), so the consumers decompress what gateways send."""
    try:
        from collector.sender import default_compression

        return default_compression()
    except Exception:
        return "lz4"


class RecordIndex:
    """Events per record of the events topic, by partition: committed offsets to events."""

    def __init__(self, records: list[tuple[int, int, int]]) -> None:
        # (partition, offset, events); offsets of a partition ascend as sent.
        self.offsets: dict[int, list[int]] = {}
        self.before: dict[int, list[int]] = {}  # events in the records before each offset
        for part, offset, n in sorted(records):
            offs = self.offsets.setdefault(part, [])
            cum = self.before.setdefault(part, [0])
            offs.append(offset)
            cum.append(cum[-1] + n)
        self.records = len(records)
        self.events = sum(n for _, _, n in records)

    def events_before(self, partition: int, offset: int) -> int:
        """Events in the records of ``partition`` below ``offset`` (a committed offset)."""
        offs = self.offsets.get(partition)
        if not offs or offset <= 0:
            return 0
        return self.before[partition][bisect_left(offs, offset)]


def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type=compression(),
    )


async def produce(
    bootstrap: str, topic: str, values: list[bytes], models: list[bytes]
) -> tuple[float, RecordIndex]:
    """Batch records, as our producers write them; the seconds taken and what went where."""
    producer = _producer(bootstrap)
    await producer.start()
    t0 = time.perf_counter()
    sent: list[tuple[int, int, int]] = []
    try:
        parts = sorted(await producer.partitions_for(topic))
        for start in range(0, len(values), ROUND_EVENTS):
            by_part: dict[int, list[bytes]] = {}
            for value, model in zip(
                values[start : start + ROUND_EVENTS],
                models[start : start + ROUND_EVENTS],
                strict=True,
            ):
                part = parts[partition_for(model, len(parts))]
                by_part.setdefault(part, []).append(value)
            futures = []
            for part, lines in by_part.items():
                for packed in pack_lines(lines):
                    fut = await producer.send(topic, packed, partition=part, headers=RECORD_HEADERS)
                    futures.append((fut, packed.count(b"\n") + 1))
            for fut, n in futures:
                meta = await fut
                sent.append((meta.partition, meta.offset, n))
    finally:
        await producer.stop()
    return time.perf_counter() - t0, RecordIndex(sent)


async def produce_single(
    bootstrap: str, topic: str, values: list[bytes], models: list[bytes]
) -> float:
    """One event per record, keyed by model: the format of other teams' producers."""
    producer = _producer(bootstrap)
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = []
        for value, model in zip(values, models, strict=True):
            futures.append(await producer.send(topic, value, key=model))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- measurements


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await c.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await c.stop()


async def _read_all(
    bootstrap: str, topic: str, ends: dict[int, int], per_record: Any
) -> tuple[int, float]:
    """Read every record of ``topic`` once, from the start; ``per_record`` returns its events."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        remaining = {p for p, end in ends.items() if end > 0}
        n = 0
        t0 = time.perf_counter()
        while remaining:
            batch = await c.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                for m in msgs:
                    n += per_record(m)
                if msgs and msgs[-1].offset + 1 >= ends[tp.partition]:
                    remaining.discard(tp.partition)
        return n, time.perf_counter() - t0
    finally:
        await c.stop()


def _decode_lines(m: Any) -> int:
    lines = record_lines(m.value, m.headers)
    for line in lines:
        decode_event(line)
    return len(lines)


def _loads_one(m: Any) -> int:
    orjson.loads(m.value)
    return 1


async def bare_consumer(bootstrap: str, topic: str, ends: dict[int, int]) -> tuple[int, float]:
    """Batch records: split each into its lines and ``decode_event`` each; nothing else."""
    return await _read_all(bootstrap, topic, ends, _decode_lines)


async def bare_single_consumer(
    bootstrap: str, topic: str, ends: dict[int, int]
) -> tuple[int, float]:
    """One-event records: ``orjson.loads`` per record, no validation; nothing else."""
    return await _read_all(bootstrap, topic, ends, _loads_one)


def decode_only(values: list[bytes]) -> float:
    t0 = time.perf_counter()
    for v in values:
        decode_event(v)
    return time.perf_counter() - t0


def validate_only(values: list[bytes]) -> float:
    """The batch validator over the same events, 1,000 lines a call."""
    from schemas.batch import validate_lines

    t0 = time.perf_counter()
    for lo in range(0, len(values), 1000):
        validate_lines(values[lo : lo + 1000])
    return time.perf_counter() - t0


def fold_core(values: list[bytes], partitions: list[int]) -> float:
    """fold_records with dicts as stores, over records of 1,000 events: our code alone.

    No Kafka, no Faust: batch validation, dedup, the columnar add and the
    bucket and seen writes, in batches of 20 records per partition.
    """
    from collections import defaultdict

    from processors.worker.fold import Record, fold_records
    from processors.worker.seen import SeenIds

    per: dict[int, list[bytes]] = defaultdict(list)
    for v, p in zip(values, partitions, strict=True):
        per[p].append(v)
    records = {
        p: [
            Record(p, o, b"\n".join(vs[lo : lo + 1000]))
            for o, lo in enumerate(range(0, len(vs), 1000))
        ]
        for p, vs in per.items()
    }
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    ids = SeenIds()
    cache: dict[Any, Any] = {}
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    longest = max(len(r) for r in records.values())
    for lo in range(0, longest, 20):
        for recs in records.values():
            if recs[lo : lo + 20]:
                fold_records(
                    recs[lo : lo + 20], buckets, seen, ids, now=now, now_s=time.time(), cache=cache
                )
    return time.perf_counter() - t0


async def topic_sizes(bootstrap: str, prefix: str) -> dict[str, int]:
    """Messages per changelog topic (sum of end offsets) of the app ``prefix``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()
    try:
        topics = [t for t in await c.topics() if t.startswith(prefix) and t.endswith("changelog")]
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        out: dict[str, int] = dict.fromkeys(topics, 0)
        for tp, off in (await c.end_offsets(tps)).items():
            out[tp.topic] += off
        return out
    finally:
        await c.stop()


class CommitWatch:
    """Polls a consumer group's committed offsets until they cover ``total`` events."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic: str,
        index: RecordIndex,
        stop_at: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.index = index
        self.total = min(index.events, stop_at or index.events)  # events, not offsets
        self.first_commit: tuple[float, int] | None = None  # (time, events committed)
        self.done_at: float | None = None
        self.on_first_commit: Any = None

    async def run(self, t_start: float, timeout: float, alive: Any) -> None:
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        try:
            while time.perf_counter() - t_start < timeout:
                if not alive():
                    raise RuntimeError("the worker exited early; see its log")
                try:
                    offs = await admin.list_consumer_group_offsets(self.group, partitions=tps)
                except KafkaError as exc:  # no coordinator yet, group not formed yet, ...
                    if not getattr(exc, "retriable", False):
                        raise
                    await asyncio.sleep(0.1)
                    continue
                now = time.perf_counter()
                done = sum(
                    self.index.events_before(tp.partition, om.offset)
                    for tp, om in offs.items()
                    if tp.topic == self.topic
                )
                if done > 0 and self.first_commit is None:
                    self.first_commit = (now, done)
                    if self.on_first_commit is not None:
                        self.on_first_commit()
                if done >= self.total:
                    self.done_at = now
                    return
                await asyncio.sleep(0.1)
            raise TimeoutError(f"worker did not commit every offset within {timeout:.0f}s")
        finally:
            await admin.close()


def counted_in_log(log: Path) -> int | None:
    found = re.findall(rb"counted=(\d+)", log.read_bytes()) if log.exists() else []
    return int(found[-1]) if found else None


#: What-ifs: a worker started with a prelude that changes one knob, to measure a
#: proposal without editing the worker. ``buffer``: Faust's ProducerBuffer holds
#: table changelog messages and, past ``max_messages`` (100), makes the conductor
#: drain it one message per loop turn before each source message. ``batch``:
#: bigger batches (20,000 events or 1 s) fold more events per bucket write.
#: ``linger``: the same, and changelog sends batched for 50 ms (Faust's default
#: is 0: each changelog message leaves in a tiny produce request).
#: ``faust-only``: nothing of ours per event (no decode, no fold): what Faust's
#: stream machinery alone allows (its counted figure is 0 by design; the run
#: stops if it is not, as when the patch misses the fold the worker calls).
#: ``same``: no change at all; a later run differs from the first by itself
#: (page cache, the broker's state), so compare what-ifs with ``same``.
#: ``linger0``: changelog sends leave at once (Faust's default).
#: ``no-changelog``, ``no-publish`` and ``no-hourly`` are not proposals but
#: bounds: what the worker would gain if a bucket write cost nothing (no
#: RocksDB, no changelog message), or if publishing (all of it, or the hourly
#: series) did; they break the worker's promises.
WHAT_IFS = {
    "buffer": (
        "ProducerBuffer.max_messages=1e6",
        "import faust.transport.producer as _p\n_p.ProducerBuffer.max_messages = 1_000_000\n",
    ),
    "batch": (
        "BATCH_MAX=20000, BATCH_WITHIN_S=1.0",
        "import processors.worker.app as _a\n_a.BATCH_MAX = 20_000\n_a.BATCH_WITHIN_S = 1.0\n",
    ),
    "faust-only": (
        "Faust's own ceiling: the same agent with the fold replaced by a no-op",
        "import processors.worker.bookkeeper as _b\n"
        "from processors.worker.fold import FoldStats as _F\n"
        "_b.fold_records = lambda *args, **kwargs: _F()\n",
    ),
    "within": (
        "BATCH_WITHIN_S=0.2",
        "import processors.worker.app as _a\n_a.BATCH_WITHIN_S = 0.2\n",
    ),
    "within05": (
        "BATCH_WITHIN_S=0.05",
        "import processors.worker.app as _a\n_a.BATCH_WITHIN_S = 0.05\n",
    ),
    "take-events": (
        "the previous batching: Faust's take_events(1000 records, within=1 s)",
        "import processors.worker.faust_private as _fp\n"
        "_fp.take_weighted = lambda stream, *a, **k: stream.take_events(1000, within=1.0)\n",
    ),
    "waits": (
        "the worker unchanged, logging per batch the time it waited for the batch, folded it,"
        " and the agent thread's CPU time while folding",
        "import sys, time\n"
        "import processors.worker.faust_private as _fp\n"
        "_take = _fp.take_weighted\n"
        "def _timed(*a, **k):\n"
        "    batches = _take(*a, **k)\n"
        "    async def timed():\n"
        "        waited = folded = cpu = 0.0\n"
        "        mark = time.perf_counter()\n"
        "        async for batch in batches:\n"
        "            got = time.perf_counter()\n"
        "            start_cpu = time.thread_time()\n"
        "            waited += got - mark\n"
        "            yield batch\n"
        "            mark = time.perf_counter()\n"
        "            folded += mark - got\n"
        "            cpu += time.thread_time() - start_cpu\n"
        "            print(f'waits: {len(batch)} records, waited {waited:.3f} s, '\n"
        "                  f'folded {folded:.3f} s, agent thread CPU {cpu:.3f} s',\n"
        "                  file=sys.stderr, flush=True)\n"
        "    return timed()\n"
        "_fp.take_weighted = _timed\n",
    ),
    "no-settle": (
        "UNSAFE ceiling: the agent does not wait for its changelog writes",
        "import processors.worker.app as _a\n"
        "async def _no_wait(self):\n    return None\n"
        "_a.FaustAdapter.settled = _no_wait\n",
    ),
    "queue4096": (
        "Faust's default stream_buffer_maxsize (4,096 records fetched ahead)",
        "import processors.worker.app as _a\n_a.STREAM_BUFFER_RECORDS = 4096\n",
    ),
    "queue64": (
        "stream_buffer_maxsize=64 records fetched ahead",
        "import processors.worker.app as _a\n_a.STREAM_BUFFER_RECORDS = 64\n",
    ),
    "queue256": (
        "stream_buffer_maxsize=256 records fetched ahead",
        "import processors.worker.app as _a\n_a.STREAM_BUFFER_RECORDS = 256\n",
    ),
    "fixed16": (
        "a fixed batch bound of 16 MiB (before BatchBound)",
        "import processors.worker.app as _a\n"
        "_a.BATCH_LOW_BYTES = _a.BATCH_HIGH_BYTES = _a.BATCH_MAX_BYTES = 16 * 1024 * 1024\n",
    ),
    "fixed64": (
        "a fixed batch bound of 64 MiB",
        "import processors.worker.app as _a\n"
        "_a.BATCH_LOW_BYTES = _a.BATCH_HIGH_BYTES = _a.BATCH_MAX_BYTES = 64 * 1024 * 1024\n",
    ),
    "writes50k": (
        "BATCH_WRITES=50,000 bucket writes per batch",
        "import processors.worker.app as _a\n_a.BATCH_WRITES = 50_000\n",
    ),
    "writes25k": (
        "BATCH_WRITES=25,000 and a first batch of 16 MiB (the previous settings)",
        "import processors.worker.app as _a\n_a.BATCH_WRITES = 25_000\n"
        "_a.BATCH_MAX_BYTES = 16 * 1024 * 1024\n",
    ),
    "high128": (
        "batches of up to 128 MiB (BATCH_HIGH_BYTES; 64 MiB now)",
        "import processors.worker.app as _a\n_a.BATCH_HIGH_BYTES = 128 * 1024 * 1024\n",
    ),
    "chunk16m": (
        "fold_records validates and groups 16 MiB of records at a time (4 MiB now)",
        "import processors.worker.fold as _f\n_f.CHUNK_BYTES = 16 * 1024 * 1024\n",
    ),
    "fetch1m": (
        "Faust's default consumer_max_fetch_size (1 MiB a partition per fetch)",
        "import processors.worker.app as _a\n_a.FETCH_PARTITION_BYTES = 1024 * 1024\n",
    ),
    "no-changelog": (
        "UNSAFE ceiling: bucket writes kept in a dict (no store, no changelog message)",
        "import contextlib\nimport processors.worker.app as _a\n"
        "_at, _held = _a.FaustAdapter.at, {}\n"
        "@contextlib.contextmanager\n"
        "def _dict_at(self, partition):\n"
        "    with _at(self, partition) as (_buckets, seen):\n"
        "        yield _held.setdefault(partition, {}), seen\n"
        "_a.FaustAdapter.at = _dict_at\n",
    ),
    "no-publish": (
        "UNSAFE ceiling: the timer publishes no rows (the rolling view's cost gone)",
        "import processors.worker.rolling_view as _r\n"
        "_r.RollingView.publish = lambda self, as_of, hourly=True: _r.Publication([], [], [])\n",
    ),
    "no-hourly": (
        "UNSAFE ceiling: the hourly series is never published (stats rows are)",
        "import processors.worker.app as _a\n_a.HOURLY_EVERY_S = 1e12\n",
    ),
    "pbatch512k": (
        "producer_max_batch_size=512 KiB (Faust's default 16 KiB: a few changelog records a batch)",
        "import faust\n"
        "class _App(faust.App):\n"
        "    def __init__(self, *a, **kw):\n"
        "        kw['producer_max_batch_size'] = 512 * 1024\n"
        "        super().__init__(*a, **kw)\n"
        "faust.App = _App\n",
    ),
    "same": (
        "the worker again, unchanged (how much a later run differs by itself)",
        "pass\n",
    ),
    "linger0": (
        "producer_linger=0 (changelog sends leave at once; Faust's default)",
        "import faust\n"
        "class _App(faust.App):\n"
        "    def __init__(self, *a, **kw):\n"
        "        kw['producer_linger'] = 0.0\n"
        "        super().__init__(*a, **kw)\n"
        "faust.App = _App\n",
    ),
    "linger": (
        "batch + producer_linger=0.05 s",
        "import processors.worker.app as _a\n_a.BATCH_MAX = 20_000\n_a.BATCH_WITHIN_S = 1.0\n"
        "import faust\n"
        "class _App(faust.App):\n"
        "    def __init__(self, *a, **kw):\n"
        "        kw.setdefault('producer_linger', 0.05)\n"
        "        super().__init__(*a, **kw)\n"
        "faust.App = _App\n",
    ),
}


class PatchedWorker(WorkerProcess):
    """``telemetry worker`` run through ``python -c`` with a prelude (a what-if)."""

    def __init__(self, *args: Any, prelude: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prelude = prelude

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        code = self.prelude + "from telemetry.cli import main\nmain()\n"
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-c", code, "worker", "--interval", str(self.interval)),
                *("--state-dir", str(self.state_dir), "--loglevel", "info"),
            ],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )


def run_worker(
    bootstrap: str,
    settings: Any,
    work: Path,
    name: str,
    index: RecordIndex,
    *,
    timeout: float,
    profile_to: Path | None = None,
    prelude: str | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    env = settings_env(settings, bootstrap, work / f"{name}-data")
    log = work / f"{name}.log"
    if prelude:
        worker: WorkerProcess = PatchedWorker(
            env, work / f"{name}-state", log, interval=5.0, prelude=prelude
        )
    else:
        worker = WorkerProcess(env, work / f"{name}-state", log, interval=5.0)
    watch = CommitWatch(bootstrap, settings.worker_id, settings.topic, index, stop_at=stop_at)
    spy: subprocess.Popen[bytes] | None = None
    t_start = time.perf_counter()
    worker.start()
    assert worker.proc is not None
    proc = psutil.Process(worker.proc.pid)
    cpu_first: list[float] = []
    watch.on_first_commit = lambda: cpu_first.append(sum(proc.cpu_times()[:2]))
    if profile_to is not None:
        spy = subprocess.Popen(
            [
                *(py_spy(), "record", "--pid", str(worker.proc.pid), "--format", "raw"),
                *("--rate", "100", "--output", str(profile_to)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    try:
        asyncio.run(watch.run(t_start, timeout, worker.alive))
        cpu = proc.cpu_times()
        rss = proc.memory_info().rss
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=60)
            if spy.returncode not in (0, -signal.SIGINT) and not profile_to.exists():
                print(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        # The next publication (every 5 s) logs the counter: a sanity check, not timed.
        deadline = time.monotonic() + (20 if stop_at is None else 0)
        counted = counted_in_log(log)
        while counted != watch.total and time.monotonic() < deadline:
            time.sleep(0.5)
            counted = counted_in_log(log)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        worker.stop()
    assert watch.first_commit is not None and watch.done_at is not None
    t_first, n_first = watch.first_commit
    net_cpu = cpu.user + cpu.system - cpu_first[0]
    sizes = asyncio.run(topic_sizes(bootstrap, settings.worker_id))
    return {
        "net_cpu_s": net_cpu,
        "net_per_cpu_s": (watch.total - n_first) / max(net_cpu, 1e-9),
        "busy": net_cpu / max(watch.done_at - t_first, 1e-9),
        "changelog": {t[len(settings.worker_id) + 1 :]: n for t, n in sizes.items()},
        "events": watch.total,
        "startup_s": t_first - t_start,
        "events_at_first_commit": n_first,
        "gross_s": watch.done_at - t_start,
        "net_s": watch.done_at - t_first,
        "gross_rate": watch.total / (watch.done_at - t_start),
        "net_rate": (watch.total - n_first) / max(watch.done_at - t_first, 1e-9),
        "cpu_s": cpu.user + cpu.system,
        "rss_mb": rss / 2**20,
        "counted": counted,
    }


# --------------------------------------------------------------------------- profile


def py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "")


def _fn(frame: str) -> str:
    """'name (path:line)' -> 'name (path)'."""
    return re.sub(r":\d+\)$", ")", frame)


# (label, predicate on the stack's frames) — the first match wins, most specific first.
def _categories() -> list[tuple[str, Any]]:
    def has(*needles: str) -> Any:
        return lambda st: any(any(n in f for n in needles) for f in st)

    return [
        ("validation: pydantic-core over the batch", has("_validate_docs (schemas/batch.py")),
        ("validation: orjson + rest", has("validate_lines (schemas/batch.py")),
        ("fold: columnar add (sums, sketches)", has("add_groups (processors/aggregate/")),
        ("fold: record encoding (to_bytes)", has("to_bytes (processors/")),
        ("fold: record decoding (from_bytes)", has("from_bytes (processors/")),
        ("fold: table writes + changelog sends", has("__setitem__ (faust/")),
        ("fold: dedup, grouping, rest", has("fold_records (processors/worker/fold.py")),
        ("agent loop (batching, per-partition split)", has("fold (processors/worker/app.py")),
        ("publish timer (rolling view, stats sends)", has("publish (processors/worker/app.py")),
        ("sweep_seen timer", has("sweep_seen (processors/worker/app.py")),
        ("faust commit / producer flush", has("commit (faust/", "_commit", "flush (")),
        ("aiokafka consumer fetch/parse", has("aiokafka/consumer", "aiokafka/record")),
        ("aiokafka producer (changelog sends)", has("aiokafka/producer")),
        ("faust stream/transport machinery", has("faust/", "mode/")),
        ("start-up (imports, app creation)", has("<module>", "_find_and_load")),
    ]


def analyse_profile(raw: Path, top: int = 20) -> list[str]:
    """Fold py-spy's raw stacks into categories, self time and inclusive time."""
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total = sum(c for _, c in stacks)
    if not total:
        return ["profile: no samples"]
    cats = _categories()
    by_cat: Counter[str] = Counter()
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, count in stacks:
        label = next((name for name, pred in cats if pred(frames)), "other")
        by_cat[label] += count
        self_t[_fn(frames[-1])] += count
        for f in {_fn(f) for f in frames}:
            incl[f] += count
    out = [f"profile: {total} samples of busy time (py-spy, 100 Hz, idle excluded)"]
    out.append("profile: where the time goes (first matching category per sample)")
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in by_cat.most_common()]
    out.append(f"profile: top {top} functions by self time")
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in self_t.most_common(top)]
    ours = [
        (n, c)
        for n, c in incl.most_common()
        if any(p in n for p in ("processors/", "schemas/", "pydantic", "orjson", "rocksdict"))
    ]
    out.append(f"profile: top {top} of our functions by inclusive time")
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in ours[:top]]
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--bootstrap", default=os.environ.get("TELEMETRY_KAFKA") or None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--spread-hours",
        type=float,
        default=144.0,
        help="event timestamps spread over the last H hours (144 = 6 days; 0.2 = live traffic)",
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="per worker run, seconds")
    ap.add_argument(
        "--profile",
        choices=["py-spy", "none"],
        default="py-spy" if py_spy() else "none",
        help="profile a second worker run with py-spy (default when installed)",
    )
    ap.add_argument(
        "--profile-events",
        type=int,
        default=60_000,
        help="the profiled run stops once this many events are committed",
    )
    ap.add_argument(
        "--what-if",
        default="",
        help=f"comma-separated what-if worker runs to add: {', '.join(WHAT_IFS)} (default none)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, profile)")
    ap.add_argument(
        "--profile-what-ifs",
        action="store_true",
        help="record each what-if worker with py-spy too (raw stacks in the work dir; --keep)",
    )
    args = ap.parse_args()
    unknown = {x.strip() for x in args.what_if.split(",") if x.strip()} - set(WHAT_IFS)
    if unknown:
        ap.error(
            f"unknown --what-if {', '.join(sorted(unknown))}; choose from {', '.join(WHAT_IFS)}"
        )

    with broker(args.bootstrap) as bootstrap, scratch("bench-throughput-", keep=args.keep) as work:
        figures = run(args, bootstrap, work)
    print()
    for line in figures:
        print(line)


def run(args: argparse.Namespace, bootstrap: str, work: Path) -> list[str]:
    prefix = f"bench-tp-{uuid.uuid4().hex[:8]}"
    settings = pipeline_settings(bootstrap, prefix, PARTITIONS)

    print(f"generating {args.events:,} events ...", flush=True)
    docs = make_docs(
        args.events, seed=args.seed, now=datetime.now(UTC), spread_hours=args.spread_hours
    )
    values = [compact(orjson.dumps(d)) for d in docs]
    models = [d["model"].encode() for d in docs]
    parts = [zlib.crc32(d["model"].encode()) % PARTITIONS for d in docs]  # any stable split
    del docs
    print(f"producing to {settings.topic} ({compression()}) ...", flush=True)
    produce_s, index = asyncio.run(produce(bootstrap, settings.topic, values, models))
    ends = asyncio.run(end_offsets(bootstrap, settings.topic))
    n = index.events
    assert n == args.events and index.records == sum(ends.values()), (n, index.records, ends)
    single_topic = f"{prefix}.one-event-records"
    asyncio.run(ensure_topics(bootstrap, [single_topic], partitions=PARTITIONS))
    print(f"producing one event per record to {single_topic} ...", flush=True)
    single_produce_s = asyncio.run(produce_single(bootstrap, single_topic, values, models))
    single_ends = asyncio.run(end_offsets(bootstrap, single_topic))
    assert sum(single_ends.values()) == n, (single_ends, n)
    del models

    load_before = os.getloadavg()
    print("bare consumer, batch records (record_lines + decode_event) ...", flush=True)
    bare_n, bare_s = asyncio.run(bare_consumer(bootstrap, settings.topic, ends))
    assert bare_n == n, (bare_n, n)
    bare_rate = bare_n / bare_s
    print(f"  {bare_rate:,.0f} events/s", flush=True)
    print("bare consumer, one event per record (orjson.loads) ...", flush=True)
    single_n, single_s = asyncio.run(bare_single_consumer(bootstrap, single_topic, single_ends))
    assert single_n == n, (single_n, n)
    single_rate = single_n / single_s
    print(f"  {single_rate:,.0f} events/s", flush=True)
    decode_s = decode_only(values)
    batch_s = validate_only(values)
    core_s = fold_core(values, parts)
    del values, parts
    print("worker ...", flush=True)
    w = run_worker(bootstrap, settings, work, "worker", index, timeout=args.timeout)

    profile_lines: list[str] = []
    prof: dict[str, Any] | None = None
    if args.profile == "py-spy":
        print("profiled worker (py-spy) ...", flush=True)
        raw = work / "profile.txt"
        psettings = settings.model_copy(update={"worker_id": f"{prefix}-profiled"})
        prof = run_worker(
            bootstrap,
            psettings,
            work,
            "profiled",
            index,
            timeout=args.timeout,
            profile_to=raw,
            stop_at=args.profile_events,
        )
        if raw.exists():
            profile_lines = analyse_profile(raw)
            for line in profile_lines:
                print(line)
            if args.keep:
                print(f"raw py-spy stacks: {raw}")

    what_ifs: list[tuple[str, dict[str, Any]]] = []
    for k, name in enumerate([x.strip() for x in args.what_if.split(",") if x.strip()]):
        label, prelude = WHAT_IFS[name]
        print(f"what-if worker ({label}) ...", flush=True)
        # Its own consumer group and state, also when a what-if is named twice.
        wsettings = settings.model_copy(update={"worker_id": f"{prefix}-whatif{k}-{name}"})
        wi = run_worker(
            bootstrap,
            wsettings,
            work,
            f"whatif{k}-{name}",
            index,
            timeout=args.timeout,
            prelude=prelude,
            profile_to=work / f"whatif{k}-{name}.raw" if args.profile_what_ifs else None,
        )
        if name == "faust-only" and wi["counted"]:
            # Its fold is a no-op: a count means the patch missed the fold the
            # worker calls (it moved), and the figure is not Faust's ceiling.
            sys.exit(f"what-if faust-only counted {wi['counted']} events: its patch did not take")
        what_ifs.append((label, wi))

    load_after = os.getloadavg()
    ratio_net = w["net_rate"] / bare_rate
    ratio_gross = w["gross_rate"] / bare_rate
    figures = [
        "== bench/worker_throughput.py ==",
        f"cpu_count: {os.cpu_count()}",
        f"load average (1 min) before/after the consumers: {load_before[0]:.2f} / "
        f"{load_after[0]:.2f} (other processes share these CPUs)",
        f"events: {n:,} in {PARTITIONS} partitions "
        f"({len(MODELS)} models x 3 providers, ts over the last {args.spread_hours:g} h), "
        f"in {index.records:,} batch records ({n / index.records:,.0f} events/record)",
        f"produce: {n / produce_s:,.0f} events/s as batch records, "
        f"{n / single_produce_s:,.0f} events/s one per record "
        f"(aiokafka, acks=all, {compression()})",
        f"decode_event only, in memory: {n / decode_s:,.0f} events/s",
        f"validate_lines only (the batch validator), in memory: {n / batch_s:,.0f} events/s",
        f"fold_records, dict stores (no Kafka/Faust): {n / core_s:,.0f} events/s",
        f"bare consumer (aiokafka + record_lines + decode_event, batch records): "
        f"{bare_rate:,.0f} events/s ({bare_s:.2f} s)",
        "bare consumer (aiokafka + orjson.loads, one event per record): "
        f"{single_rate:,.0f} events/s",
        f"worker start-up (to first commit): {w['startup_s']:.2f} s "
        f"({w['events_at_first_commit']:,} events committed then)",
        f"worker gross (start -> all committed): {w['gross_rate']:,.0f} events/s "
        f"({w['gross_s']:.2f} s)",
        f"worker net (first -> last commit): {w['net_rate']:,.0f} events/s ({w['net_s']:.2f} s)",
        f"worker CPU in the net window: {w['net_cpu_s']:.1f} s = "
        f"{w['net_per_cpu_s']:,.0f} events per worker CPU-second "
        f"(worker busy {100 * w['busy']:.0f}% of one core); RSS at end {w['rss_mb']:.0f} MB",
        "worker changelog messages: "
        + ", ".join(f"{t} {c:,} ({c / n:.2f}/event)" for t, c in sorted(w["changelog"].items())),
        f"worker counted (its log): {w['counted']} of {n} "
        f"({'OK' if w['counted'] == n else 'MISMATCH'})",
        f"ratio worker/bare: net {ratio_net:.3f}, gross {ratio_gross:.3f}",
        f"ratio worker net / bare consumer (orjson.loads, one event per record): "
        f"{w['net_rate'] / single_rate:.3f}",
    ]
    if prof is not None:
        figures.append(
            f"profiled worker (py-spy attached, first {prof['events']:,} events): "
            f"net {prof['net_rate']:,.0f} events/s, gross {prof['gross_rate']:,.0f} events/s"
        )
    for label, wi in what_ifs:
        figures.append(
            f"what-if {label}: net {wi['net_rate']:,.0f} events/s "
            f"(ratio {wi['net_rate'] / bare_rate:.3f}), gross {wi['gross_rate']:,.0f} events/s, "
            f"{wi['net_per_cpu_s']:,.0f} events/CPU-s, changelog "
            + ", ".join(f"{t} {c / n:.2f}/event" for t, c in sorted(wi["changelog"].items()))
            + f", counted {wi['counted']} ({'OK' if wi['counted'] == n else 'MISMATCH'})"
        )
    single_ratio = w["net_rate"] / single_rate
    goal_rate = "met" if w["net_rate"] >= 50_000 else "NOT met"
    goal_ratio = "met" if single_ratio >= 0.5 else "NOT met"
    figures.append(
        f"goal >=50,000 events/s: {goal_rate} (net {w['net_rate']:,.0f}); "
        f"goal >=0.5x the one-event-per-record bare consumer: {goal_ratio} "
        f"({single_ratio:.3f})"
    )
    return figures


if __name__ == "__main__":
    main()
