"""The walking skeleton on the real broker: ingest, Kafka, Faust worker, sink, ClickHouse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_util import (
    SinkThread,
    WorkerProcess,
    settings_env,
    settings_for,
    synthetic_events,
    wait_exact,
    wait_for,
    wanted_counts,
    with_duplicates,
)

pytestmark = pytest.mark.integration


def test_ingest_worker_sink_end_to_end(
    kafka_bootstrap: str, clickhouse: Any, clickhouse_dsn: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(topic_prefix)
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    unique = synthetic_events(3_000, seed=7)
    lines = [orjson.dumps(e) for e in with_duplicates(unique, 0.05, seed=8)]
    lines += [b'{"not": "an event"}', b"garbage", b"[1, 2, 3]"]
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")

    out = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "ingest", str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"accepted {len(lines) - 3}, rejected 3" in out.stdout

    worker = WorkerProcess(env, tmp_path / "w1", tmp_path / "w1.log")
    worker.start()
    try:
        with SinkThread(settings, clickhouse_dsn, kafka_bootstrap, f"{topic_prefix}-sink") as sink:
            stored = wait_for(
                lambda: (
                    clickhouse.query("SELECT count() FROM telemetry.requests")[0][0] == len(unique)
                ),
                timeout=120,
                what="every unique event in telemetry.requests",
            )
            assert stored
            wait_for(
                lambda: sink.counters.rejected == 3,
                timeout=60,
                what="the three dead letters in telemetry.rejected",
            )
            wait_exact(clickhouse, wanted_counts(unique), what="model_stats_7d exact counts")
            assert sink.error is None
    finally:
        worker.stop()
    # Raw rows: one per event_id; the three bad lines went through the DLQ topic
    # into telemetry.rejected with their reasons and line numbers.
    ids = clickhouse.query("SELECT uniqExact(event_id), count() FROM telemetry.requests")[0]
    assert ids == (len(unique), len(unique))
    rejected = clickhouse.query("SELECT location, field, reason FROM telemetry.rejected")
    assert sorted(r[0] for r in rejected) == [
        f"line {len(lines) - 2}",
        f"line {len(lines) - 1}",
        f"line {len(lines)}",
    ]
    assert any("malformed JSON" in r[2] for r in rejected)
    assert worker.proc is not None and worker.proc.returncode is not None
