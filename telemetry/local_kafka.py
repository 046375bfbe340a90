"""Drive ``deploy/local-kafka``: a real broker, started and stopped on demand.

Shared by `telemetry demo --kafka` and the tests' fixture brokers. A broker
takes two ports (``port`` for clients, ``port + 1`` for its KRaft
controller) and keeps its state in a directory of its port
(``run-PORT`` under ``TELEMETRY_KAFKA_HOME``), so brokers on distinct ports
never share data: a broker on a free port of the moment never clashes with
another on the same machine.

The script exists in a clone of the repository (where `pip install -e .`
points); an installed wheel has no ``deploy/``, which ``tooling_available``
says in one line.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SCRIPT",
    "LocalKafka",
    "free_port_pair",
    "kafka_home",
    "port_pair_free",
    "tooling_available",
]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local-kafka"
#: Where a broker picked at random may listen (an even port and the next one).
RANDOM_PORTS = range(20000, 29998, 2)


def kafka_home() -> Path:
    """deploy/local-kafka's cache and state root (its TELEMETRY_KAFKA_HOME rule)."""
    if os.environ.get("TELEMETRY_KAFKA_HOME"):
        return Path(os.environ["TELEMETRY_KAFKA_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "telemetry-kafka"


def port_pair_free(port: int) -> bool:
    """Whether ``port`` and ``port + 1`` on 127.0.0.1 can be bound right now."""
    for p in (port, port + 1):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def free_port_pair(near: int | None = None, *, span: int = 50) -> int:
    """A port whose pair is free: the first from ``near`` on (within ``span``), else at random."""
    if near is not None:
        for port in range(near, near + span, 2):
            if port_pair_free(port):
                return port
        raise RuntimeError(f"no free port pair in {near}-{near + span - 1}")
    for port in random.sample(RANDOM_PORTS, 50):
        if port_pair_free(port):
            return port
    raise RuntimeError(f"no free port pair in {RANDOM_PORTS.start}-{RANDOM_PORTS.stop}")


@dataclass
class LocalKafka:
    """One single-node KRaft broker on 127.0.0.1:port, owned by the test that made it."""

    port: int
    #: Seconds ``stop`` waits after SIGTERM before it SIGKILLs the JVM (the script's default: 30).
    stop_timeout_s: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        """Its configuration, data, pid file and log (deploy/local-kafka's layout)."""
        return kafka_home() / f"run-{self.port}"

    def command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The script's argv and environment for ``args`` (e.g. ``start``) on this port."""
        env = dict(os.environ, KAFKA_PORT=str(self.port))
        env.pop("KAFKA_CONTROLLER_PORT", None)  # always port + 1: one pair per broker
        if self.stop_timeout_s is not None:
            env["KAFKA_STOP_TIMEOUT"] = str(self.stop_timeout_s)
        return [str(SCRIPT), *args], env

    def _run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv, env = self.command(*args)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> str:
        proc = self._run("start")
        if proc.returncode != 0:
            raise RuntimeError(f"deploy/local-kafka start failed: {proc.stderr[-2000:]}")
        return proc.stdout.strip().splitlines()[-1]

    def stop(self, *, wipe: bool = False) -> None:
        self._run("stop", *(["--wipe"] if wipe else []))

    def remove(self) -> None:
        """Stop it and delete its whole state directory (a broker on a port of the moment)."""
        self.stop(wipe=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def running(self) -> bool:
        return self._run("status").returncode == 0

    def pid(self) -> int | None:
        """The broker JVM's pid (the script records it; ``stop`` checks it is still the broker)."""
        try:
            return int((self.state_dir / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker's log, for a failing test's message."""
        path = self.state_dir / "broker.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def tooling_available() -> str | None:
    """None when java and mvn are present, else the reason the broker cannot start."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (needed by deploy/local-kafka)"
    if not SCRIPT.exists():
        return "deploy/local-kafka is missing (it comes with a clone of the repository)"
    return None
