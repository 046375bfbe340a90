"""Drive ``deploy/local-kafka`` from tests: a real broker, started and stopped on demand."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local-kafka"


@dataclass
class LocalKafka:
    """One single-node KRaft broker on 127.0.0.1:port, owned by the test that made it."""

    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KAFKA_PORT=str(self.port))
        return subprocess.run(
            [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> str:
        proc = self._run("start")
        if proc.returncode != 0:
            raise RuntimeError(f"deploy/local-kafka start failed: {proc.stderr[-2000:]}")
        return proc.stdout.strip().splitlines()[-1]

    def stop(self, *, wipe: bool = False) -> None:
        self._run("stop", *(["--wipe"] if wipe else []))

    def running(self) -> bool:
        return self._run("status").returncode == 0


def tooling_available() -> str | None:
    """None when java and mvn are present, else the reason the broker cannot start."""
    import shutil

    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (needed by deploy/local-kafka)"
    if not SCRIPT.exists():
        return "deploy/local-kafka is missing"
    return None
