"""`telemetry demo` on a fresh directory: every simulated model gets its page block."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from simulator.catalog import MODELS

pytestmark = pytest.mark.integration


def test_demo_prints_a_block_per_model_and_exports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["COLUMNS"] = "200"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "telemetry.cli",
            "demo",
            "--events",
            "30000",
            "--live",
            "3",
            "--rate",
            "100",
            "--seed",
            "7",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    stats = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "stats", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = [r for r in orjson.loads(stats.stdout) if r["provider"] == ""]
    assert {r["model"] for r in rows} <= {m.slug for m in MODELS}
    assert len(rows) >= 10
    for r in rows:
        assert f" {r['model']} " in out.stdout  # its panel title
    assert out.stdout.count("Performance") == len(rows)
    assert sum(r["requests"] for r in rows) >= 30_000 * 0.9  # resent copies are dropped
    index = tmp_path / ".telemetry" / "export" / "index.json"
    assert index.exists()
    assert "index.html" in out.stdout
