"""SIGKILL the ingest service while it holds spooled events; restarted, it delivers them all.

A 200 means durable: the first service has no broker, so every accepted event is in its
spool (fsynced before the answer) when it is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from collector.auth import hash_token

from .conftest import read_events, scrape, wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
TOKEN = "gw-token-kill"


@contextmanager
def service(
    bootstrap: str, spool_dir: Path, topics: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_serve.py"),
            bootstrap,
            str(spool_dir),
            topics["topic"],
            topics["dlq_topic"],
            hash_token(TOKEN),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("LISTENING "), line
        yield proc, line.split()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


async def test_sigkill_service_then_restart_delivers_every_accepted_event(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    events = [event_factory() for _ in range(5000)]
    spool_dir = tmp_path / "spool"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
    async with aiohttp.ClientSession() as http:
        with service("127.0.0.1:1", spool_dir, topics) as (proc, url):
            for i in range(0, len(events), 500):
                body = b"\n".join(orjson.dumps(e) for e in events[i : i + 500])
                async with http.post(f"{url}/v1/events", data=body, headers=headers) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["accepted"] == 500
            metrics = await scrape(http, url)
            assert metrics["telemetry_emitter_spool_records"] == len(events)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        with service(kafka_bootstrap, spool_dir, topics) as (proc, url):

            async def replayed() -> bool:
                m = await scrape(http, url)
                return (
                    m["telemetry_emitter_spool_records"] == 0
                    and m["telemetry_emitter_in_flight"] == 0
                )

            await wait_until(replayed, timeout=60, what="the killed service's spool to be replayed")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0  # graceful stop
    ids = [
        orjson.loads(e.value)["event_id"]
        for e in await read_events(kafka_bootstrap, topics["topic"])
    ]
    assert sorted(ids) == sorted(e["event_id"] for e in events)
