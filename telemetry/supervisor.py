"""Child processes under one supervisor: one prefixed log, ordered stops, no orphans.

Used by `telemetry demo --kafka` to run the collector, the workers and the
sink (and the script that starts the broker) as the cluster would, each its
own process. Every child:

- runs in a session of its own, so a Ctrl-C in the terminal reaches only
  the supervisor, which stops the children itself;
- dies with the supervisor: it is started through ``telemetry.orphan_guard
  exec`` (Linux ``PR_SET_PDEATHSIG``), and its pid is given to a watchdog
  (``telemetry.orphan_guard watch``) that kills what is left, and stops the
  broker, if the supervisor dies without cleaning up;
- writes stdout and stderr into one combined log, each line prefixed with
  the child's name.

A child that ends while it should be running fails the supervisor
(``Supervisor.failed``): crash-only components exit non-zero when they
cannot do their job, and so does the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "ChildFailed", "Guard", "Supervisor"]

#: Terminal control a child writes for a terminal it does not have (Faust's spinner).
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x08\r]")
#: SIGTERM to SIGKILL: every component ends within 10 s of SIGTERM (7 s deadline inside).
STOP_GRACE_S = 9.0


class ChildFailed(Exception):
    """A child ended while it should have been running; the message says which and why."""


class Guard:
    """The watchdog process that outlives the supervisor only to clean up after it."""

    def __init__(self, log: Path | None = None) -> None:
        argv = [sys.executable, "-m", "telemetry.orphan_guard", "watch"]
        if log is not None:
            argv.append(str(log))
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()

    def track(self, pid: int) -> None:
        self._send(f"pid {pid}")

    def track_broker(self, port: int) -> None:
        self._send(f"broker {port}")

    def release(self) -> None:
        """Everything is stopped: the watchdog exits without doing anything."""
        with contextlib.suppress(OSError, ValueError):
            self._send("done")
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: True once the supervisor stops or kills it: its end is not a failure.
    ending: bool = False
    #: True for a command that is meant to finish (the broker's start script).
    transient: bool = False
    lines: list[str] = field(default_factory=list)
    _watchers: list[tuple[re.Pattern[str], asyncio.Future[re.Match[str]]]] = field(
        default_factory=list
    )
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def last_line(self) -> str:
        return self.lines[-1] if self.lines else "(no output)"


class Supervisor:
    """Starts, watches and stops child processes; ``log(name, line)`` gets every line."""

    def __init__(self, guard: Guard, log: Callable[[str, str], None]) -> None:
        self.guard = guard
        self.log = log
        self.children: list[Child] = []
        self.failed: asyncio.Future[ChildFailed] = asyncio.get_running_loop().create_future()

    async def start(
        self, name: str, argv: Sequence[str], env: dict[str, str], *, transient: bool = False
    ) -> Child:
        """Start ``argv`` as a child named ``name`` that dies with this process."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "telemetry.orphan_guard",
            "exec",
            str(os.getpid()),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            limit=1 << 20,
        )
        self.guard.track(proc.pid)
        child = Child(name, proc, list(argv), dict(env), transient=transient)
        child.reader = asyncio.create_task(self._read(child))
        self.children.append(child)
        return child

    async def _read(self, child: Child) -> None:
        assert child.proc.stdout is not None
        while raw := await child.proc.stdout.readline():
            line = _CONTROL.sub("", raw.decode("utf-8", "replace")).rstrip()
            if not line:
                continue
            child.lines.append(line)
            del child.lines[:-50]
            self.log(child.name, line)
            for pattern, future in list(child._watchers):
                match = pattern.search(line)
                if match and not future.done():
                    future.set_result(match)
        status = await child.proc.wait()
        for _, future in child._watchers:
            if not future.done():
                future.set_exception(
                    ChildFailed(
                        f"{child.name} exited with status {status} before it was ready: "
                        f"{child.last_line()}"
                    )
                )
        if not child.ending and not child.transient and not self.failed.done():
            self.failed.set_result(
                ChildFailed(f"{child.name} exited with status {status}: {child.last_line()}")
            )

    async def wait_for_line(self, child: Child, pattern: str, *, timeout: float) -> re.Match[str]:
        """The first line of ``child`` (from now on, or already seen) that matches ``pattern``."""
        regex = re.compile(pattern)
        for line in child.lines:
            if match := regex.search(line):
                return match
        future: asyncio.Future[re.Match[str]] = asyncio.get_running_loop().create_future()
        child._watchers.append((regex, future))
        if not child.running:
            raise ChildFailed(f"{child.name} is not running: {child.last_line()}")
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ChildFailed(
                f"{child.name} did not say it was ready within {timeout:.0f} s: {child.last_line()}"
            ) from None

    async def finish(self, child: Child) -> int:
        """Wait for a transient child to end and its output to be read; its status."""
        status = await child.proc.wait()
        if child.reader is not None:
            await child.reader
        return status

    def kill(self, child: Child) -> None:
        """SIGKILL a child on purpose (a crash to ride out)."""
        child.ending = True
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGKILL)

    async def restart(self, child: Child, grace_s: float = STOP_GRACE_S) -> Child:
        """Stop ``child`` if it runs (SIGTERM, SIGKILL after ``grace_s``), start it again."""
        if child.running:
            child.ending = True
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGKILL)
                await child.proc.wait()
        self.children.remove(child)
        return await self.start(child.name, child.argv, child.env, transient=child.transient)

    async def stop_all(self, grace_s: float = STOP_GRACE_S) -> list[tuple[Child, int | None]]:
        """SIGTERM every running child at once; SIGKILL those still up after ``grace_s``.

        Returns (child, status) for each child that was running.
        """
        running = [c for c in self.children if c.running]
        for child in running:
            child.ending = True
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        if running:
            _, late = await asyncio.wait(
                [asyncio.ensure_future(c.proc.wait()) for c in running], timeout=grace_s
            )
            if late:
                for child in running:
                    if child.running:
                        self.log(
                            "demo",
                            f"{child.name} still running {grace_s:.0f} s after SIGTERM: SIGKILL",
                        )
                        with contextlib.suppress(ProcessLookupError):
                            child.proc.send_signal(signal.SIGKILL)
                await asyncio.gather(*(c.proc.wait() for c in running))
        readers = [c.reader for c in self.children if c.reader is not None]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 2)
        return [(c, c.proc.returncode) for c in running]
