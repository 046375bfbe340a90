"""`telemetry demo --kafka`: the cluster on one machine, exact, and nothing left behind.

A scaled-down run (the defaults are in `telemetry demo --help`) with its own
broker from deploy/local-kafka, as a new user gets it; then the supervisor
SIGKILLed (or SIGTERMed) mid-run, and every process it started, the broker's
JVM included, checked gone by pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest
from kafka_broker import kafka_home, tooling_available
from pipeline_util import wait_for

pytestmark = pytest.mark.integration

EXACT = re.compile(
    r"^exact: ([\d,]+) events sent, ([\d,]+) counted, ([\d,]+) resent copies dropped$"
)
PID = re.compile(r"(?:started \S+|broker|orphan guard) pid (\d+)|started \S+ \(pid (\d+)\)")


def _env() -> dict[str, str]:
    """No TELEMETRY_* settings (the demo starts its own broker), the broker cache kept."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TELEMETRY_") or k == "TELEMETRY_KAFKA_HOME"
    }
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(autouse=True)
def _broker_tooling() -> None:
    reason = tooling_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and no local broker: {reason}", pytrace=False)
        pytest.skip(f"no local broker: {reason}")


def _demo(*extra: str) -> list[str]:
    return [sys.executable, "-m", "telemetry.cli", "demo", "--kafka", *extra]


def _pids(log: str) -> set[int]:
    return {int(a or b) for a, b in PID.findall(log)}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_kafka_counts_exactly_and_exports(tmp_path: Path) -> None:
    out = subprocess.run(
        _demo("--events", "20000", "--live", "6", "--rate", "100", "--seed", "11"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [m for line in out.stdout.splitlines() if (m := EXACT.match(line))]
    assert len(lines) == 1, out.stdout[-3000:]
    sent, counted, resent = (int(g.replace(",", "")) for g in lines[0].groups())
    assert sent == counted and resent > 0
    assert sent + resent >= 20_000  # the backfill, then some live events
    assert re.search(r"SIGKILL worker-2 \(pid \d+\) mid-stream", out.stderr)

    root = tmp_path / ".telemetry" / "demo-kafka"
    # The same figure two other ways: the raw events the sink stored (deduplicated
    # by event id), and the export's per-model requests.
    stored = _cli(
        tmp_path,
        "--data-dir",
        str(root),
        "sql",
        "SELECT count() FROM telemetry.requests",
        "-f",
        "csv",
    )
    assert stored.returncode == 0, stored.stderr
    assert int(stored.stdout.split()[-1]) == sent
    index = orjson.loads((root / "export" / "index.json").read_bytes())
    assert sum(m["requests"] for m in index["models"]) == sent
    assert out.stdout.count("Performance") == len(index["models"]) >= 10
    for m in index["models"]:
        assert (root / "export" / m["page"]).is_file()

    # Nothing left running: every pid the demo named is gone, the broker's state too.
    pids = _pids(out.stderr)
    assert len(pids) >= 6  # guard, broker, sink, two workers, collector
    assert not [p for p in pids if psutil.pid_exists(p)]
    port = re.search(r"broker pid \d+ on 127\.0\.0\.1:(\d+)", out.stderr)
    assert port is not None
    assert not (kafka_home() / f"run-{port.group(1)}").exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_stopping_the_supervisor_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "demo.err"
    with log.open("wb") as err:
        demo = subprocess.Popen(
            _demo("--events", "400000", "--live", "60", "--seed", "3"),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        text = ""

        def running() -> bool:
            nonlocal text
            text = log.read_text(errors="replace")
            assert demo.poll() is None, text[-3000:]
            return "listening on http://" in text and "started collector" in text

        wait_for(running, timeout=300, what="the demo's cluster to be up")
        broker = re.search(r"broker pid (\d+) on 127\.0\.0\.1:(\d+)", text)
        assert broker is not None
        procs = psutil.Process(demo.pid).children(recursive=True)
        procs.append(psutil.Process(int(broker.group(1))))
        named = _pids(text)
        assert named <= {p.pid for p in procs} | {demo.pid}  # psutil sees what the demo named
        assert len(procs) >= 6  # guard, broker, sink, two workers, collector
        demo.send_signal(sig)
        if sig == signal.SIGTERM:
            assert demo.wait(15) == 128 + signal.SIGTERM  # everything stopped within 15 s
            gone_within = 5.0
        else:
            demo.wait(10)
            gone_within = 60.0  # the watchdog stops the broker (SIGKILL after 10 s)
        _, alive = psutil.wait_procs(procs, timeout=gone_within)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        port = broker.group(2)
        wait_for(
            lambda: not (kafka_home() / f"run-{port}").exists(),
            timeout=30,
            what="the broker's state directory to be removed",
        )
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
