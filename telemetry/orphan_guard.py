"""Nothing a supervisor started may outlive it, even when it is SIGKILLed.

Two entry points, run as ``python -m telemetry.orphan_guard``; standard
library only, so they start in milliseconds:

``exec PARENT_PID CMD...``
    Asks Linux to SIGKILL this process when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``), checks the parent is still ``PARENT_PID``
    (it may have died before the request), then ``exec``s ``CMD``. The
    request survives ``exec``, so the command itself dies with the
    supervisor. A SIGKILL loses nothing: every component is crash-only and
    commits its offsets only after its effects are stored.

``watch [LOG]``
    A watchdog in a session of its own, reading commands on stdin from the
    supervisor: ``pid N`` (a process to kill if the supervisor dies),
    ``broker PORT`` (a ``deploy/local-kafka`` broker to stop and wipe),
    ``done`` (the supervisor cleaned up itself: exit quietly). End of input
    without ``done`` means the supervisor died: the watchdog SIGKILLs the
    processes still alive and stops the broker. The broker needs this: its
    JVM is started by a script into a session of its own (``setsid``) and
    reparented when the script ends, so no death signal of ours reaches it;
    ``deploy/local-kafka stop`` finds its pid in the pid file and checks it
    is still that broker before it signals it. Also the fallback where
    ``PR_SET_PDEATHSIG`` does not exist (not Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["die_with_parent", "main"]

_PR_SET_PDEATHSIG = 1
#: After the supervisor died: time for a broker launcher it killed to write its pid file.
_LAUNCH_GRACE_S = 1.0
#: Seconds ``deploy/local-kafka stop`` waits after SIGTERM before it SIGKILLs the JVM.
BROKER_STOP_TIMEOUT_S = 10


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _ours(pid: int) -> bool:
    """Whether ``pid`` still runs one of our commands (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # no procfs (not Linux): trust the pid
    except OSError:
        return False
    return b"telemetry" in cmdline or b"local-kafka" in cmdline


def _watch(log_path: str | None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the supervisor's end counts
    log = open(log_path, "a") if log_path else None  # noqa: SIM115 (lives as long as we do)

    def say(text: str) -> None:
        if log is not None:
            log.write(f"{time.strftime('%H:%M:%S')} orphan guard: {text}\n")
            log.flush()

    pids: list[int] = []
    ports: list[int] = []
    for raw in sys.stdin:
        kind, _, arg = raw.strip().partition(" ")
        if kind == "done":
            return 0
        if kind == "pid" and arg.isdigit():
            pids.append(int(arg))
        elif kind == "broker" and arg.isdigit():
            ports.append(int(arg))
    say(f"the supervisor is gone; killing {len(pids)} processes, stopping {len(ports)} brokers")
    for pid in pids:
        if _ours(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                say(f"SIGKILL {pid}")
    if ports:
        from telemetry.local_kafka import LocalKafka

        time.sleep(_LAUNCH_GRACE_S)
        for port in ports:
            LocalKafka(port, stop_timeout_s=BROKER_STOP_TIMEOUT_S).remove()
            say(f"stopped and wiped the broker on port {port}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "exec" and argv[1].isdigit():
        die_with_parent(int(argv[1]))
        os.execvp(argv[2], argv[2:])
    if argv and argv[0] == "watch":
        return _watch(argv[1] if len(argv) > 1 else None)
    sys.stderr.write(
        "usage: python -m telemetry.orphan_guard exec PARENT_PID CMD... | watch [LOG]\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
