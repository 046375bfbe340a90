"""Simulated traffic into its targets: the real ingest app (in memory), files, the command."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from collector.auth import TokenAuth
from collector.handoff import MemoryHandoff
from collector.http.app import create_app
from schemas.errors import ConfigError
from schemas.settings import Settings
from simulator import SimulationPlan, Simulator, parse_target, simulate
from simulator.targets import FileTarget, HttpTarget

# Recent: the ingest app rejects events over 30 days old.
END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
TOKEN = "sim-test-token"


async def _serve(handoff: MemoryHandoff) -> TestServer:
    auth = TokenAuth([hashlib.sha256(TOKEN.encode()).hexdigest()])
    server = TestServer(create_app(handoff=handoff, auth=auth, registry=CollectorRegistry()))
    await server.start_server()
    return server


async def test_http_target_posts_batches_to_the_ingest_app() -> None:
    handoff = MemoryHandoff()
    server = await _serve(handoff)
    try:
        target = HttpTarget(str(server.make_url("/")), token=TOKEN)
        plan = SimulationPlan(backfill_days=1, backfill_events=2_500, end=END)
        report = await simulate(Simulator(seed=1), target, plan)
    finally:
        await server.close()
    assert report.backfilled == 2_500
    assert report.target.sent == 2_500
    assert report.target.accepted == 2_500
    assert report.target.rejected == 0
    assert len(handoff.events) == 2_500
    ids = [str(e.event_id) for e in handoff.events]
    assert len(set(ids)) < len(ids)  # resent copies went over the wire as they are


async def test_http_target_without_the_token_says_which_variable() -> None:
    server = await _serve(MemoryHandoff())
    try:
        target = HttpTarget(str(server.make_url("/")), token=None)
        plan = SimulationPlan(backfill_days=1, backfill_events=10, end=END)
        with pytest.raises(ConfigError, match="TELEMETRY_INGEST_TOKEN"):
            await simulate(Simulator(seed=1), target, plan)
    finally:
        await server.close()


def test_parse_target() -> None:
    settings = Settings()
    assert isinstance(parse_target("file:-", settings), FileTarget)
    http = parse_target("http://127.0.0.1:8080", settings)
    assert isinstance(http, HttpTarget) and http.url == "http://127.0.0.1:8080/v1/events"
    with pytest.raises(ConfigError, match="TELEMETRY_KAFKA"):
        parse_target("kafka", settings)
    with pytest.raises(ConfigError, match="file:PATH"):
        parse_target("s3://bucket", settings)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "simulate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=120,
    )


def test_command_writes_the_same_file_for_the_same_seed(tmp_path: Path) -> None:
    args = ["--backfill", "2d", "--events", "3000", "--seed", "9", "--end", "2026-03-04T12:00:00Z"]
    first = _cli([*args, "--to", "file:a.ndjson"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert b"3,000 events" in first.stdout
    second = _cli([*args, "--to", "file:b.ndjson"], tmp_path)
    assert (tmp_path / "a.ndjson").read_bytes() == (tmp_path / "b.ndjson").read_bytes()
    lines = (tmp_path / "a.ndjson").read_bytes().splitlines()
    assert len(lines) == 3000
    assert second.returncode == 0
    docs: list[dict[str, Any]] = [orjson.loads(line) for line in lines]
    assert docs[0]["ts"].startswith("2026-03-02T12:")


def test_command_to_stdout_keeps_stdout_for_events(tmp_path: Path) -> None:
    out = _cli(["--rate", "400", "--events", "50", "--to", "file:-"], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 50
    assert all(line.startswith(b'{"event_id"') for line in lines)
    assert b"simulate" in out.stderr


def test_command_refuses_nonsense(tmp_path: Path) -> None:
    nothing = _cli(["--to", "file:x"], tmp_path)
    assert nothing.returncode == 2 and b"--backfill" in nothing.stderr
    bad = _cli(["--backfill", "7 parsecs"], tmp_path)
    assert bad.returncode == 2 and b"--backfill" in bad.stderr
    future = _cli(["--backfill", "1d", "--end", "2999-01-01T00:00:00Z"], tmp_path)
    assert future.returncode == 2 and b"future" in future.stderr
