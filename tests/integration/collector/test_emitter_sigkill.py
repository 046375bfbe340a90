"""SIGKILL a process that holds spooled events; the next run delivers every one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import TelemetryEmitter

from .conftest import read_events, wait_for

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


async def test_sigkill_then_restart_delivers_every_spooled_event(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    events = [event_factory() for _ in range(10_000)]
    events_file = tmp_path / "events.ndjson"
    events_file.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    spool_dir = tmp_path / "spool"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_spool_and_hang.py"),
            str(events_file),
            str(spool_dir),
            topics["topic"],
            topics["dlq_topic"],
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the child says its events are spooled
        assert line.strip() == f"SPOOLED {len(events)}", line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    emitter = TelemetryEmitter(bootstrap_servers=kafka_bootstrap, spool_dir=spool_dir, **topics)
    async with emitter:
        assert emitter.spool.pending_records == len(events)
        await wait_for(
            lambda: emitter.spool.pending_records == 0 and emitter.in_flight == 0,
            timeout=60,
            what="the dead process's spool to be replayed",
        )
    ids = [
        orjson.loads(e.value)["event_id"]
        for e in await read_events(kafka_bootstrap, topics["topic"])
    ]
    assert sorted(ids) == sorted(e["event_id"] for e in events)
