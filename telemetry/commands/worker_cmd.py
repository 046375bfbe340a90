"""`telemetry worker`: the Faust worker (or, with --sink, the ClickHouse sink).

Both are crash-only (docs/deploy.md, "When the broker goes away"): an error
that waiting cannot cure ends the process with a non-zero status for its
supervisor to restart, and a stop (SIGTERM, SIGINT, or the shutdown after a
crash) that has not ended the process within ``STOP_DEADLINE_S`` is forced.
Forcing loses nothing: offsets are committed only after the state (worker)
or the rows (sink) are stored, so what was not committed is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from collector.topics import partition_counts
from processors.kafka_io import ensure_topics
from processors.worker.tables import changelog_topics
from telemetry.context import console, fail, settings_from
from telemetry.pipeline import require
from telemetry.pipeline.kafka import KafkaPipeline

#: Seconds a stop may take before the process is ended anyway (SIGTERM must
#: end it within 10 s whatever the broker's state).
STOP_DEADLINE_S = 7.0
#: Exit status after an unrecoverable error (Faust's, for a crashed worker).
CRASH_STATUS = 1
#: Exit status of a stop that had to be forced: that of a process ended by SIGTERM.
FORCED_STOP_STATUS = 128 + signal.SIGTERM


class StopDeadline:
    """Ends the process if a stop has not ended it ``seconds`` after :meth:`arm`.

    The last resort after a graceful stop attempt: Faust's consumer thread,
    for one, never finishes stopping once the broker has gone. A daemon
    thread, so it fires whatever the event loop or the interpreter's exit
    is waiting for, and never holds a process that ended in time.
    """

    def __init__(self, role: str, seconds: float = STOP_DEADLINE_S) -> None:
        self.role = role
        self.seconds = seconds
        self.status = FORCED_STOP_STATUS
        self.why = ""
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, status: int, why: str) -> None:
        """Start the countdown (once); a crash's status wins over a stop's."""
        with self._lock:
            if self._timer is not None:
                if status == CRASH_STATUS:
                    self.status, self.why = status, why
                return
            self.status, self.why = status, why
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        line = (
            f"{self.role}: stop not finished {self.seconds:.0f} s {self.why} "
            f"(broker unreachable?); exiting now with status {self.status}, "
            "nothing lost: what was not committed is read again\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, line.encode())
        os._exit(self.status)


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        ctx: typer.Context,
        sink: Annotated[
            bool, typer.Option("--sink", help="run the ClickHouse sink instead of a Faust worker")
        ] = False,
        app_id: Annotated[
            str | None,
            typer.Option("--app-id", help="consumer group / app id [TELEMETRY_WORKER_ID]"),
        ] = None,
        state_dir: Annotated[
            Path | None,
            typer.Option("--state-dir", help="RocksDB state (default under the data dir)"),
        ] = None,
        interval: Annotated[
            float | None, typer.Option("--interval", help="seconds between stats publications")
        ] = None,
        loglevel: Annotated[str, typer.Option("--loglevel", help="worker log level")] = "warning",
        metrics_port: Annotated[
            int | None,
            typer.Option(
                "--metrics-port",
                help="serve Prometheus /metrics on this port (0: a free one, printed) "
                "[TELEMETRY_METRICS_PORT; unset: not served]",
                min=0,
                max=65535,
            ),
        ] = None,
    ) -> None:
        """Consume telemetry.requests.v1 and keep the rolling 7-day stats (needs TELEMETRY_KAFKA).

        Run several for more throughput: they share the work by partition. Run one
        `telemetry worker --sink` to write events and stats to ClickHouse.
        """
        settings = settings_from(ctx)
        bootstrap = require(
            settings,
            KafkaPipeline,
            "the worker needs a broker: set TELEMETRY_KAFKA (or --kafka HOST:PORT)",
        ).broker
        if interval is not None:
            settings = settings.model_copy(update={"stats_interval_s": interval})
        if metrics_port is not None:
            settings = settings.model_copy(update={"metrics_port": metrics_port})
        asyncio.run(
            ensure_topics(
                bootstrap,
                [settings.topic, settings.dlq_topic, settings.stats_topic, settings.hourly_topic],
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
            )
        )
        if sink:
            _run_sink(settings, bootstrap)
            return
        # The tables' changelogs exist, with the events topic's partitions, before
        # Faust starts: left to Faust, a fresh broker's metadata could show them
        # with 0 partitions when the agent first touches a table (PartitionsMismatch).
        worker_id = app_id or settings.worker_id
        asyncio.run(
            ensure_topics(
                bootstrap,
                changelog_topics(worker_id),
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                configs={"cleanup.policy": "compact"},
            )
        )
        # Checked here, against the broker: the app trusts it (faust_private).
        counts = asyncio.run(
            partition_counts(bootstrap, [settings.topic, *changelog_topics(worker_id)])
        )
        events_n = counts.pop(settings.topic)
        wrong = {t: n for t, n in counts.items() if n != events_n}
        if wrong:
            fail(
                "changelog topics with the wrong number of partitions "
                f"(want {events_n}, as {settings.topic} has): "
                + ", ".join(f"{t} has {n}" for t, n in sorted(wrong.items()))
                + "; a changelog must match the events topic partition for partition"
            )
        from processors.worker.app import create_app
        from processors.worker.metrics import WorkerMetrics

        metrics = WorkerMetrics.for_settings(settings)
        faust_app = create_app(
            settings, bootstrap=bootstrap, app_id=app_id, data_dir=state_dir, metrics=metrics
        )
        console.print(
            f"worker {faust_app.conf.id} on {bootstrap}, state in {faust_app.conf.datadir}"
        )
        _serve_metrics(settings, metrics.registry, "worker")
        worker_class = crash_only_worker_class()
        worker_class(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()


def crash_only_worker_class() -> type[Any]:
    """``faust.Worker`` whose every stop is bounded by a :class:`StopDeadline`.

    ``stop()`` runs first thing on SIGTERM or SIGINT (also when it arrives
    during start-up) and after a crash (Faust then re-raises the crash:
    exit status 1); either way the deadline is armed before Faust's own
    shutdown, which can wait forever on a broker that is gone.
    """
    import faust

    class CrashOnlyWorker(faust.Worker):
        deadline = StopDeadline("worker")

        def _arm(self) -> None:
            if self.crash_reason is not None:
                self.deadline.arm(CRASH_STATUS, "after a crash")
            else:
                self.deadline.arm(FORCED_STOP_STATUS, "after a stop signal")

        async def stop(self) -> None:
            self._arm()
            threading.excepthook = _quiet_cancelled_threads
            await super().stop()

        def on_worker_shutdown(self) -> None:
            self._arm()
            super().on_worker_shutdown()

    return CrashOnlyWorker


_thread_excepthook = threading.excepthook


def _quiet_cancelled_threads(args: threading.ExceptHookArgs) -> None:
    """One line, not a traceback, for a client thread cancelled while the worker stops.

    With the broker gone, Faust's consumer thread dies of the CancelledError
    aiokafka's ``stop()`` leaks (the stop deadline then ends the process);
    anything else keeps Python's default report.
    """
    if args.exc_type is not None and issubclass(args.exc_type, asyncio.CancelledError):
        name = args.thread.name if args.thread is not None else "?"
        logging.getLogger(__name__).warning(
            "thread %s was cancelled while stopping (broker unreachable?)", name
        )
        return
    _thread_excepthook(args)


class RateLimit(logging.Filter):
    """At most one record per logger and message template every ``every`` seconds.

    aiokafka logs every failed connection attempt (dozens of lines a second
    while the broker is away); one a template every 30 s says the same.
    """

    def __init__(
        self,
        prefix: str = "aiokafka",
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.every = every
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped and last is not None:
            record.msg = f"{record.msg} [{dropped} more like this in the last {now - last:.0f} s]"
        return True


def _serve_metrics(settings: Any, registry: Any, role: str) -> None:
    """Start /metrics if a port is set, and print where (port 0 picks a free one)."""
    if settings.metrics_port is None:
        return
    from collector.metrics import serve_metrics

    try:
        port = serve_metrics(registry, host=settings.metrics_host, port=settings.metrics_port)
    except OSError as exc:
        fail(
            f"{role}: cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
            f"(TELEMETRY_METRICS_PORT / --metrics-port): {exc.strerror or exc}"
        )
    console.print(f"{role} metrics: http://{settings.metrics_host}:{port}/metrics")


def _run_sink(settings: object, bootstrap: str) -> None:
    from processors.sinks.kafka_sink import run_sink
    from processors.sinks.metrics import SinkMetrics
    from processors.store import open_store
    from schemas.settings import Settings
    from telemetry.service.control import serve_store, socket_path

    assert isinstance(settings, Settings)
    ch = open_store(settings)
    console.print(f"sink {bootstrap} -> ClickHouse")
    metrics = SinkMetrics()
    _serve_metrics(settings, metrics.registry, "sink")
    deadline = StopDeadline("sink")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            deadline.arm(FORCED_STOP_STATUS, f"after {sig.name}")
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        async with contextlib.AsyncExitStack() as shared:
            if settings.clickhouse is None:
                # The sink owns the embedded store: other shells read through it.
                await shared.enter_async_context(serve_store(settings, ch))
                console.print(f"control socket: {socket_path(settings.data_dir)}")
            await run_sink(settings, ch, bootstrap=bootstrap, stop=stop, metrics=metrics)

    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    quieter = RateLimit()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quieter)
    try:
        asyncio.run(main())
    except BaseException:
        deadline.arm(CRASH_STATUS, "after a crash")
        raise
