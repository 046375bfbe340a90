"""docs/deploy.md, step 2, as written: a broker, migrate, a worker, the sink, events in,
then `telemetry stats`, `sql`, `export` and `migrate` from another shell while the sink
owns the embedded store (they read through its control socket)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from pipeline_util import settings_env, settings_for, wait_for

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_step_two_reads_while_the_sink_runs(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(topic_prefix)
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    env["TELEMETRY_STATS_INTERVAL_S"] = "2"
    week = tmp_path / "day.ndjson"
    made = _cli(env, "simulate", "--backfill", "1d", "--events", "4000", "--to", f"file:{week}")
    assert made.returncode == 0, made.stderr
    unique = {orjson.loads(line)["event_id"] for line in week.read_bytes().splitlines() if line}

    assert _cli(env, "migrate").returncode == 0
    logs = [(tmp_path / "worker.log").open("wb"), (tmp_path / "sink.log").open("wb")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "telemetry.cli", "worker", "--state-dir", str(tmp_path / "s")],
            env=env,
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "telemetry.cli", "worker", "--sink"],
            env=env,
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        sent = _cli(env, "ingest", str(week))
        assert sent.returncode == 0, sent.stderr

        def stored() -> bool:
            out = _cli(env, "sql", "SELECT count() FROM telemetry.requests", "-f", "csv")
            return out.returncode == 0 and out.stdout.split()[-1] == str(len(unique))

        wait_for(stored, timeout=120, what=f"{len(unique)} events stored by the sink")

        def exact() -> bool:
            out = _cli(env, "stats", "--json")
            rows = orjson.loads(out.stdout) if out.returncode == 0 else []
            return sum(r["requests"] for r in rows if not r["provider"]) == len(unique)

        wait_for(exact, timeout=120, what="`telemetry stats` to count every event, once")
        status = _cli(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        health = orjson.loads(status.stdout)
        assert health["mode"] == "kafka" and health["store_error"] is None  # via the socket
        assert health["stats_as_of"] is not None

        # `telemetry export` and `telemetry migrate` read through the sink too.
        exported = _cli(env, "export", "--once", "--out", str(tmp_path / "export"))
        assert exported.returncode == 0, exported.stderr
        assert f"pid {procs[1].pid}" in exported.stdout
        index = orjson.loads((tmp_path / "export" / "index.json").read_bytes())
        assert sum(m["requests"] for m in index["models"]) == len(unique)
        migrated = _cli(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert "up to date (checked through the running process" in migrated.stdout
        assert all(p.poll() is None for p in procs)  # both still own their parts
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for fh in logs:
            fh.close()
    assert procs[1].returncode == 0, (tmp_path / "sink.log").read_text()[-2000:]
    assert not (tmp_path / "data" / "control.sock").exists()
