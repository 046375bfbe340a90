"""telemetry.orphan_guard: a child dies with its supervisor; the watchdog kills what is left."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest

_SUPERVISOR = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-m", "telemetry.orphan_guard", "exec", str(os.getpid()),
     sys.executable, "-c", "import time; time.sleep(120)  # telemetry"],
)
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_exec_child_dies_with_its_parent() -> None:
    sup = subprocess.Popen([sys.executable, "-c", _SUPERVISOR], stdout=subprocess.PIPE, text=True)
    try:
        assert sup.stdout is not None
        child = psutil.Process(int(sup.stdout.readline()))
        assert child.is_running()
        sup.send_signal(signal.SIGKILL)
        sup.wait(10)
        child.wait(30)  # raises TimeoutExpired if it outlived its parent
        assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
    finally:
        sup.kill()
        sup.wait(10)


def test_exec_refuses_a_parent_that_is_not_its_own() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "telemetry.orphan_guard", "exec", "1", "true"],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 1  # its parent is not pid 1: it exits instead of running `true`


def test_watchdog_kills_what_it_was_told_when_its_supervisor_goes() -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # telemetry"])
    watch = subprocess.Popen(
        [sys.executable, "-m", "telemetry.orphan_guard", "watch"], stdin=subprocess.PIPE
    )
    try:
        assert watch.stdin is not None
        watch.stdin.write(f"pid {victim.pid}\n".encode())
        watch.stdin.close()  # the supervisor's end of the pipe closes: it died
        assert watch.wait(30) == 0
        assert victim.wait(30) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait(10)


def test_watchdog_does_nothing_after_done() -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # telemetry"])
    watch = subprocess.Popen(
        [sys.executable, "-m", "telemetry.orphan_guard", "watch"], stdin=subprocess.PIPE
    )
    try:
        assert watch.stdin is not None
        watch.stdin.write(f"pid {victim.pid}\ndone\n".encode())
        watch.stdin.close()
        assert watch.wait(30) == 0
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait(10)
