"""`telemetry export`: flags, exit codes, the summary, and a schedule stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from schemas.settings import Settings
from telemetry.commands import export_cmd

pytestmark = pytest.mark.integration
CHILD = Path(__file__).with_name("cli_child.py")
REPO = Path(__file__).resolve().parents[3]


def _app(settings: Settings) -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = settings

    export_cmd.register(app)
    return app


def _invoke(clickhouse: Any, tmp_path: Path, *args: str, **env: str) -> Any:
    settings = Settings(clickhouse=clickhouse.dsn, data_dir=tmp_path / "data")
    args = (*args, "--no-refresh")  # the stats are inserted directly, not from events
    return CliRunner().invoke(_app(settings), ["export", *args], env=env or None)


def test_once_writes_the_tree_and_prints_a_summary(
    clickhouse: Any, tmp_path: Path, now: datetime, data: Any
) -> None:
    data.insert(clickhouse, data.stats_rows(now, {"a/b": {"x": 500}, "c/d": {"y": 5}}))
    result = _invoke(clickhouse, tmp_path, "--once", "--max-age", "1h")
    assert result.exit_code == 0, result.output
    assert "2 models written, 0 skipped" in result.output
    out = tmp_path / "data" / "export"  # the default: under the data directory
    assert json.loads((out / "index.json").read_text())["models"][1]["model"] == "c/d"


def test_stale_stats_exit_non_zero(clickhouse: Any, tmp_path: Path, data: Any) -> None:
    from datetime import UTC, timedelta

    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    data.insert(clickhouse, data.stats_rows(old, {"a/b": {"x": 500}}))
    result = _invoke(clickhouse, tmp_path, "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "stale" in result.output and "a/b (3h 00m old)" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--once", "--every", "5m"], "exclude each other"),
        (["--every", "5 minutes"], "--every '5 minutes': not a duration"),
        (["--cron", "*/5 * * *"], "needs 5 fields"),
        (["--max-age", "soon"], "--max-age 'soon'"),
        (["--push", "ftp://x"], "TELEMETRY_CATALOG_TOKEN"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    clickhouse: Any, tmp_path: Path, args: list[str], message: str
) -> None:
    result = _invoke(clickhouse, tmp_path, *args, TELEMETRY_CATALOG_TOKEN="")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_every_runs_until_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "export"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            str(tmp_path / "data"),
            "stats",
            "export",
            "--every",
            "1s",
            "--out",
            str(out),
            "--no-fsync",
            "--no-refresh",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "index.json").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.5)  # at least one more run on the 1 s schedule
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert output.count("2 models written") >= 2, output
    assert "every 0:00:01" in output and output.rstrip().endswith("stopped")


def test_the_telemetry_command_offers_export() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "export", "--help"],
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    missing = "cannot import name" in result.stderr and "export_cmd" not in result.stderr
    if result.returncode != 0 and missing:
        pytest.skip(f"the telemetry CLI is not assembled yet: {result.stderr.splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    for flag in ("--once", "--every", "--cron", "--out", "--min-sample", "--max-age", "--push"):
        assert flag in result.stdout


def test_embedded_export_refreshes_stats_from_events(tmp_path: Path) -> None:
    """No worker: `telemetry export` folds ingested events into fresh stats first."""
    out = tmp_path / "export"
    result = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            str(tmp_path / "data"),
            "events",
            "export",
            "--once",
            "--out",
            str(out),
            "--min-sample",
            "100",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 models written" in result.stdout
    doc = json.loads((out / "models/openai/gpt-4.1-mini.json").read_text())
    assert doc["stats"]["requests"] == 150
    assert doc["stats"]["ttft_samples"] == 150
    assert doc["display"]["ttft_p50"] == "1.07 s"  # median of 1000..1149 ms (sketch: <1%)
    assert doc["providers"]["azure"]["stats"]["requests"] == 50
    assert doc["providers"]["azure"]["stats"]["ttft_p50_ms"] is None  # 50 < 100 samples
