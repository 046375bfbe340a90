"""`telemetry status` in embedded mode, as a user runs it: refresh lag, stats age, rejected
rows and the spool's bytes, each against a value the test made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from pipeline_util import synthetic_events

from collector.spool import Spool

pytestmark = pytest.mark.integration


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
        text=True,
    )


def status(cwd: Path, *extra: str) -> dict[str, object]:
    out = run(["status", "--json", *extra], cwd)
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def test_embedded_status_reports_what_the_store_and_spool_hold(tmp_path: Path) -> None:
    fresh = status(tmp_path)
    assert fresh["mode"] == "embedded" and fresh["stats_as_of"] is None
    assert fresh["dead_letters"] == 0 and fresh["spool_bytes"] == 0

    events = [orjson.dumps(e) for e in synthetic_events(500, seed=11)]
    bad = [b"{not json", orjson.dumps({"event_id": "x"})]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join([*events[:250], *bad, *events[250:]]) + b"\n")
    assert run(["ingest", "in.ndjson"], tmp_path).returncode == 0  # stores and refreshes

    # Rows stored after the refresh: the embedded pipeline's lag.
    added = run(
        [
            "sql",
            "--write",
            "INSERT INTO telemetry.requests SELECT * REPLACE "
            "(generateUUIDv4(rowNumberInAllBlocks()) AS event_id, now64(3) AS ingested_at) "
            "FROM telemetry.requests LIMIT 7",
        ],
        tmp_path,
    )
    assert added.returncode == 0, added.stderr
    spool = Spool(tmp_path / ".telemetry" / "spool")
    spool.open()
    spool.append([("telemetry.requests.v1", b"", b"x" * 1000)])
    spool.close()
    on_disk = sum(p.stat().st_size for p in (tmp_path / ".telemetry" / "spool").glob("*.seg"))

    doc = status(tmp_path)
    assert doc["lag"] == [
        {
            "who": "refresh",
            "topic": "telemetry.requests",
            "partition": None,
            "lag": 7,
            "end": None,
            "committed": None,
        }
    ]
    assert doc["dead_letters"] == len(bad)
    assert doc["spool_bytes"] == on_disk > 1000
    assert doc["stats_stale"] is False and doc["store_error"] is None
    assert isinstance(doc["stats_age_s"], float) and doc["stats_age_s"] >= 0

    table = run(["status"], tmp_path)
    assert table.returncode == 0, table.stderr
    assert "refresh lag" in table.stdout and "newest stats" in table.stdout

    assert run(["stats", "--json"], tmp_path).returncode == 0  # refreshes the 7 rows
    assert [row["lag"] for row in status(tmp_path)["lag"]] == [0]  # type: ignore[union-attr]


def test_an_unreachable_broker_is_one_line_and_status_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["TELEMETRY_KAFKA"] = f"127.0.0.1:{port}"
    out = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "cannot reach Kafka" in out.stderr and "Traceback" not in out.stderr
