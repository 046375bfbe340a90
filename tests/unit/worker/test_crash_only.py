"""Crash-only wiring: the agent's supervisor, the stop deadline, bounded client logs.

The behaviour end to end (a real agent crash, SIGTERM with the broker gone) is
in tests/integration/test_broker_restart.py; these pin the pieces it rests on.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import mode
import pytest

from processors.worker.app import create_app
from schemas.settings import Settings
from telemetry.commands.worker_cmd import (
    CRASH_STATUS,
    FORCED_STOP_STATUS,
    RateLimit,
    crash_only_worker_class,
)


def test_an_exception_escaping_the_agent_crashes_the_worker(tmp_path: Path) -> None:
    # Faust's default (OneForOneSupervisor) restarts a crashed agent in the
    # same process, where PendingWrites keeps failing it: a live process that
    # never acknowledges again. CrashingSupervisor propagates the crash up to
    # the Worker, which stops and exits with status 1.
    app = create_app(Settings(), bootstrap="127.0.0.1:9", data_dir=tmp_path)
    assert app.conf.agent_supervisor is mode.CrashingSupervisor
    (agent,) = app.agents.values()
    assert agent.supervisor_strategy is None  # so the app's setting applies


def test_the_worker_class_arms_its_deadline_on_every_stop() -> None:
    import faust

    cls = crash_only_worker_class()
    assert issubclass(cls, faust.Worker)
    # Both hooks it relies on are Faust's own, called on every shutdown path.
    assert "stop" in vars(cls) and "on_worker_shutdown" in vars(cls)
    assert callable(faust.Worker.on_worker_shutdown)


def _deadline_script(body: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import threading\n"
        "from telemetry.commands.worker_cmd import StopDeadline, CRASH_STATUS, FORCED_STOP_STATUS\n"
        + body
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_stop_that_hangs_is_forced_with_one_line_and_its_status() -> None:
    started = time.monotonic()
    out = _deadline_script(
        "d = StopDeadline('worker', seconds=0.5)\n"
        "d.arm(FORCED_STOP_STATUS, 'after a stop signal')\n"
        "threading.Event().wait()  # a stop that never finishes\n"
    )
    assert out.returncode == FORCED_STOP_STATUS == 143
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("worker: stop not finished 0 s after a stop signal")
    assert "nothing lost" in lines[0]
    assert time.monotonic() - started < 30


def test_a_crash_after_a_stop_signal_exits_as_a_crash() -> None:
    out = _deadline_script(
        "d = StopDeadline('sink', seconds=0.5)\n"
        "d.arm(FORCED_STOP_STATUS, 'after SIGTERM')\n"
        "d.arm(CRASH_STATUS, 'after a crash')\n"
        "d.arm(FORCED_STOP_STATUS, 'after SIGINT')  # a second signal changes nothing\n"
        "threading.Event().wait()\n"
    )
    assert out.returncode == CRASH_STATUS == 1
    assert out.stderr.startswith("sink: stop not finished 0 s after a crash")


def test_a_process_that_ends_in_time_is_not_held_by_its_deadline() -> None:
    started = time.monotonic()
    out = _deadline_script(
        "d = StopDeadline('worker', seconds=30)\n"
        "d.arm(FORCED_STOP_STATUS, 'after a stop signal')\n"
        "print('stopped cleanly')\n"
    )
    assert out.returncode == 0 and out.stdout == "stopped cleanly\n"
    assert out.stderr == ""
    assert time.monotonic() - started < 20  # not the 30 s of the deadline


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_client_retry_noise_is_one_line_per_message_and_period() -> None:
    now = [100.0]
    limit = RateLimit(every=30.0, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"
    assert limit.filter(_record("aiokafka", template, 1, "refused"))
    passed = [limit.filter(_record("aiokafka", template, 1, "refused")) for _ in range(50)]
    assert not any(passed)
    # Another message, another logger, or our own logs: not held back.
    assert limit.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s", 1))
    assert limit.filter(_record("processors.sinks.kafka_sink", template, 1, "refused"))
    now[0] += 31.0
    again = _record("aiokafka", template, 1, "refused")
    assert limit.filter(again)
    assert again.getMessage().endswith("[50 more like this in the last 31 s]")


def test_a_client_thread_cancelled_while_stopping_is_one_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telemetry.commands import worker_cmd

    reported: list[type[BaseException] | None] = []  # what goes on to the usual hook
    monkeypatch.setattr(
        worker_cmd, "_thread_excepthook", lambda args: reported.append(args.exc_type)
    )
    monkeypatch.setattr(threading, "excepthook", worker_cmd._quiet_cancelled_threads)

    def dies_of(exc: BaseException) -> None:
        def run() -> None:
            raise exc

        t = threading.Thread(target=run, name=f"dies-of-{type(exc).__name__}")
        t.start()
        t.join()

    caplog.set_level(logging.WARNING, logger=worker_cmd.__name__)
    dies_of(asyncio.CancelledError())
    assert "thread dies-of-CancelledError was cancelled while stopping" in caplog.text
    assert reported == []
    dies_of(ValueError("a real bug"))  # anything else: the usual full report
    assert reported == [ValueError]
