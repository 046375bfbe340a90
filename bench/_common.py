"""Shared by the benchmarks: a broker address (given, or a local one started here), events."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # pipeline_util: the tests' event and run helpers
LOCAL_KAFKA = ROOT / "deploy" / "local-kafka"
#: Port of the broker a benchmark starts itself (controller on port + 1).
BENCH_KAFKA_PORT = int(os.environ.get("BENCH_KAFKA_PORT", "19496"))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("TELEMETRY_KAFKA"),
        help="Kafka bootstrap servers [env TELEMETRY_KAFKA; default: start deploy/local-kafka]",
    )
    return p


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap address, or a fresh local broker for the benchmark's duration."""
    if bootstrap:
        yield bootstrap
        return
    print(f"starting a broker on port {BENCH_KAFKA_PORT} ...", flush=True)
    env = dict(os.environ, KAFKA_PORT=str(BENCH_KAFKA_PORT))
    proc = subprocess.run(
        [str(LOCAL_KAFKA), "start"], env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        sys.exit(f"deploy/local-kafka start failed: {proc.stderr[-2000:]}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            [str(LOCAL_KAFKA), "stop", "--wipe"], env=env, capture_output=True, timeout=120
        )


@contextmanager
def scratch(prefix: str, *, keep: bool) -> Iterator[Path]:
    """A temporary work directory, removed afterwards unless ``keep``."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def compact(raw: bytes) -> bytes:
    """An exact-size copy: orjson's result keeps a 4 KiB allocation (measured, orjson 3.13),
    which adds up to gigabytes when hundreds of thousands of encoded events are held."""
    return memoryview(raw).tobytes()


def make_event(i: int = 0) -> dict[str, Any]:
    """The tests' valid event, spread over a few models by ``i``."""
    from pipeline_util import make_event as event

    models = ("openai/gpt-4.1-mini", "anthropic/claude-sonnet-4", "meta/llama-3.3-70b", "x/y")
    return event(model=models[i % len(models)], gateway_id="gw-bench-1")


def topic_name(kind: str) -> str:
    return f"bench.{kind}.{uuid.uuid4().hex[:8]}"


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def footer() -> None:
    print(f"python {sys.version.split()[0]}, {sys.platform}")
    print(f"os.cpu_count() = {os.cpu_count()}")
