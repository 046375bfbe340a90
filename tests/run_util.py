"""A `telemetry run` child process and the CLI, for tests that drive the embedded service."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
from pipeline_util import wait_for

__all__ = ["RunProcess", "cli", "cli_bytes", "run_env"]


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without TELEMETRY_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    return {**env, **(extra or {})}


class RunProcess:
    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = env
        self.log = cwd / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        seen = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "telemetry.cli",
                "run",
                "--port",
                "0",
                "--refresh-every",
                "1",
                "--export-every",
                "0",
            ],
            cwd=self.cwd,
            env=run_env(self.env),
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

        def listening() -> str | None:
            found = re.findall(rb"POST (http://\S+/v1/events)", self.log.read_bytes()[seen:])
            return found[-1].decode() if found else None

        self.url = wait_for(listening, timeout=60, what="telemetry run to listen")

    def post(self, docs: list[dict[str, object]]) -> dict[str, object]:
        body = b"\n".join(orjson.dumps(d) for d in docs)
        req = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/x-ndjson"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
            return orjson.loads(resp.read())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One `telemetry` command in ``cwd``, its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        cwd=cwd,
        env=run_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_bytes(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The same with bytes in and out (hostile input and output checked byte for byte)."""
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        cwd=cwd,
        env=run_env(env),
        input=stdin,
        capture_output=True,
        timeout=300,
    )
