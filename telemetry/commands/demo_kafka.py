"""`telemetry demo --kafka`: the whole cluster on this machine, supervised, then nothing left.

A broker (``deploy/local-kafka`` on a free port, in a state directory of
that port, unless ``TELEMETRY_KAFKA`` names one), then the collector, two
workers and the sink, each its own process as in a deployment
(``telemetry.supervisor``: one prefixed log, ordered stops, nothing outlives
the demo even if it is SIGKILLed). A simulated week goes in through the
collector's HTTP door, then live traffic; halfway through it one worker is
SIGKILLed, and the other takes its partitions over. The demo then waits
until the stats in the store count every event sent exactly once, prints
the model-page blocks and one line comparing the two (the count is read
from the store, through the sink's control socket), writes the export, and
stops everything.

Everything it writes lives in ``DATA_DIR/demo-kafka`` (wiped at start, kept
afterwards for `telemetry --data-dir DATA_DIR/demo-kafka stats`), and its
topics carry a prefix of their own: a store and topics shared with anything
else could not be compared exactly with what the demo sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from rich.progress import Progress
from rich.text import Text

from processors.aggregate.window import hour_start, window_start_hour
from processors.export.run import ExportOptions, export_once
from processors.worker.tables import changelog_topics
from schemas.errors import TelemetryError
from schemas.settings import Settings
from simulator.generator import Simulator
from simulator.run import SimulationPlan, simulate
from simulator.targets import HttpTarget
from telemetry.context import console, err_console
from telemetry.local_kafka import LocalKafka, free_port_pair, tooling_available
from telemetry.pipeline import open_pipeline
from telemetry.safe_text import safe_text
from telemetry.service.control import ControlClient, socket_path
from telemetry.supervisor import Child, ChildFailed, Guard, Supervisor

__all__ = ["KafkaDemoOptions", "run_kafka_demo"]

#: Seconds between stats publications in the demo's workers (30 in production).
STATS_INTERVAL_S = 2
#: How fast the SIGKILLed worker's partitions move (the settings' lower bound).
SESSION_TIMEOUT_S = 6
#: Seconds a stopping broker gets before ``deploy/local-kafka stop`` SIGKILLs it.
BROKER_STOP_S = 5
#: Longest wait for every event to be counted once the last one was sent.
SETTLE_TIMEOUT_S = 180.0
#: A count that has not moved for this long while short of the events sent is a stall.
STALL_S = 20.0
#: Worker restarts the demo tries against a stall before it reports the count as it is.
MAX_RESTARTS = 3
#: Longest wait for a child to say it is ready.
READY_TIMEOUT_S = 180.0
WORKERS = 2
_COLORS = {
    "demo": "bold",
    "kafka": "magenta",
    "collector": "cyan",
    "worker-1": "green",
    "worker-2": "yellow",
    "sink": "blue",
}


@dataclass(frozen=True)
class KafkaDemoOptions:
    days: float
    events: int
    live_s: float
    rate: float
    seed: int
    min_sample: int


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived: stop everything, exit 128 + signal."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.sig = sig


#: A Faust log line's level: ``[2026-01-01 12:00:00,123] [pid] [INFO] ...``.
_LEVEL = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[\d+\] \[([A-Z]+)\]")


class _Log:
    """The combined log: every line prefixed with its process, to a file and the terminal.

    The workers log at INFO (rebalances, recoveries, each publication's
    counters), which goes to the file only: the terminal gets their warnings
    and errors, and everything else every process prints.
    """

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")
        self.progress: Progress | None = None
        self._level: dict[str, str] = {}

    def __call__(self, name: str, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.file.write(f"{stamp} {name:>9} | {line}\n")
        self.file.flush()
        if found := _LEVEL.match(line):
            self._level[name] = found.group(1)
        elif not line.startswith(("|", "+", "〃")):  # not a continuation (Faust's tables)
            self._level.pop(name, None)
        if self._level.get(name) in ("INFO", "DEBUG"):
            return
        text = Text.assemble(
            Text(f"{name:>9} │ ", style=_COLORS.get(name, "dim")),
            safe_text(line, style="bold" if name == "demo" else "dim"),
        )
        target = self.progress.console if self.progress is not None else err_console
        target.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.file.close()


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies under it (shorter to read)."""
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd())
    return path


def _lock(data_dir: Path) -> int:
    """One `telemetry demo --kafka` per data directory at a time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "demo-kafka.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ChildFailed(
            f"another `telemetry demo --kafka` is running in {data_dir}: wait for it, "
            "or give this one another --data-dir"
        ) from None
    return fd


def _child_env(root: Path, bootstrap: str, prefix: str, token_digest: str) -> dict[str, str]:
    """The children's settings: the demo's own store, topics and group; nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update(
        TELEMETRY_KAFKA=bootstrap,
        TELEMETRY_DATA_DIR=str(root),
        TELEMETRY_TOPIC=f"{prefix}.requests.v1",
        TELEMETRY_DLQ_TOPIC=f"{prefix}.requests.dlq",
        TELEMETRY_STATS_TOPIC=f"{prefix}.stats.v1",
        TELEMETRY_HOURLY_TOPIC=f"{prefix}.stats.hourly.v1",
        TELEMETRY_WORKER_ID=f"{prefix}-worker",
        TELEMETRY_STATS_INTERVAL_S=str(STATS_INTERVAL_S),
        TELEMETRY_WORKER_SESSION_TIMEOUT_S=str(SESSION_TIMEOUT_S),
        TELEMETRY_INGEST_TOKENS=token_digest,
        PYTHONUNBUFFERED="1",
        COLUMNS="160",
    )
    return env


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    """On a broker that is not the demo's own: remove the topics the demo made."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
        ours += [t for t in changelog_topics(f"{prefix}-worker") if t not in ours]
        existing = set(await admin.list_topics())
        await admin.delete_topics([t for t in ours if t in existing])
    finally:
        await admin.close()


class _CountingTarget(HttpTarget):
    """The collector's HTTP door, keeping the id of every event handed to it.

    What was sent is counted from the events themselves: distinct ids are
    the events, the rest are resent copies.
    """

    def __init__(self, url: str, *, token: str) -> None:
        super().__init__(url, token=token)
        self.ids: set[str] = set()

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        self.ids.update(e["event_id"] for e in batch)
        await super().send(batch)


class _Demo:
    def __init__(self, settings: Settings, options: KafkaDemoOptions) -> None:
        self.settings = settings
        self.options = options
        self.root = (settings.data_dir / "demo-kafka").absolute()
        self.broker: LocalKafka | None = None
        self.bootstrap = open_pipeline(settings).broker
        self.prefix = f"demo-{secrets.token_hex(4)}"
        self.log: _Log | None = None
        self.exact = False

    def say(self, line: str) -> None:
        assert self.log is not None
        self.log("demo", line)

    # -- the phases --------------------------------------------------------------

    async def start_broker(self, sup: Supervisor, progress: Progress) -> str:
        if self.bootstrap:
            self.say(
                f"using the broker at {self.bootstrap} (TELEMETRY_KAFKA), topics {self.prefix}.*"
            )
            return self.bootstrap
        reason = tooling_available()
        if reason:
            raise ChildFailed(f"cannot start a local broker: {reason}; or set TELEMETRY_KAFKA")
        broker = LocalKafka(free_port_pair(), stop_timeout_s=BROKER_STOP_S)
        sup.guard.track_broker(broker.port)
        self.broker = broker
        task = progress.add_task("broker", total=None, note=f"deploy/local-kafka on {broker.port}")
        await asyncio.to_thread(broker.stop, wipe=True)  # whatever an old run left on this port
        argv, env = broker.command("start")
        script = await sup.start("kafka", argv, env, transient=True)
        status = await sup.finish(script)
        if status != 0:
            raise ChildFailed(f"deploy/local-kafka start failed: {script.last_line()}")
        bootstrap = script.last_line().strip()
        progress.update(task, total=1, completed=1, note=bootstrap)
        self.say(f"broker pid {broker.pid()} on {bootstrap}, state in {broker.state_dir}")
        return bootstrap

    async def start_cluster(self, sup: Supervisor, env: dict[str, str]) -> tuple[str, Child]:
        cli = [sys.executable, "-m", "telemetry.cli"]
        sink = await sup.start("sink", [*cli, "worker", "--sink"], env)
        self.say(f"started sink (pid {sink.pid})")
        workers = []
        for n in range(1, WORKERS + 1):
            state = self.root / f"worker-{n}"
            argv = [*cli, "worker", "--state-dir", str(state), "--loglevel", "info"]
            child = await sup.start(f"worker-{n}", argv, env)
            workers.append(child)
            self.say(f"started worker-{n} (pid {child.pid})")
        argv = [*cli, "collector", "--port", "0", "--spool-dir", str(self.root / "spool")]
        collector = await sup.start("collector", argv, env)
        self.say(f"started collector (pid {collector.pid})")
        await sup.wait_for_line(sink, r"^control socket: ", timeout=READY_TIMEOUT_S)
        found = await sup.wait_for_line(
            collector, r"listening on (http://\S+)", timeout=READY_TIMEOUT_S
        )
        for worker in workers:  # Faust's "Ready": joined the group, tables restored
            await sup.wait_for_line(worker, r"\]: Ready$", timeout=READY_TIMEOUT_S)
        self.say("the collector, both workers and the sink are ready")
        return found.group(1), workers[-1]

    async def traffic(
        self, sup: Supervisor, url: str, token: str, victim: Child, progress: Progress
    ) -> tuple[int, int, int]:
        """Backfill and live traffic over HTTP; (events sent, resent copies, accepted)."""
        o = self.options
        now = datetime.now(UTC)
        # The backfill starts an hour after the window's first hour, so that no event
        # leaves the 7-day window if the hour turns while the demo runs.
        start = max(hour_start(window_start_hour(now) + 1), now - timedelta(days=o.days))
        days = (now - start).total_seconds() / 86_400
        sim = Simulator(seed=o.seed)
        live_total = int(o.live_s * o.rate)
        backfill = progress.add_task(
            "backfill", total=o.events, note=f"{days * 24:.0f} h of traffic via POST {url}"
        )
        live = progress.add_task("live", total=live_total, note=f"{o.rate:g}/s", start=False)
        kill_at = live_total // 2 if live_total else o.events // 2
        sent = {"backfill": 0, "live": 0}

        def kill_once(phase: str) -> None:
            if victim.ending or sent[phase] < kill_at:
                return
            if (phase == "backfill") != (live_total == 0):
                return
            sup.kill(victim)
            self.say(
                f"SIGKILL {victim.name} (pid {victim.pid}) mid-stream: the other worker takes "
                f"its partitions over within {SESSION_TIMEOUT_S} s; the count below shows "
                "whether anything was lost or counted twice"
            )

        def on_backfill(n: int) -> None:
            sent["backfill"] += n
            progress.update(backfill, completed=sent["backfill"])
            kill_once("backfill")

        def on_live(n: int) -> None:
            if sent["live"] == 0:
                progress.start_task(live)
            sent["live"] += n
            progress.update(live, completed=sent["live"])
            kill_once("live")

        plan = SimulationPlan(
            backfill_days=days,
            backfill_events=o.events,
            end=now,
            rate=o.rate if live_total else None,
            duration_s=o.live_s if live_total else None,
            live_events=live_total or None,
        )
        target = _CountingTarget(url, token=token)
        report = await simulate(sim, target, plan, on_backfill=on_backfill, on_live=on_live)
        progress.update(backfill, note=f"{report.backfill_s:.0f} s")
        total = report.backfilled + report.live
        accepted = report.target.accepted or 0
        if report.target.rejected:
            raise ChildFailed(
                f"the collector rejected {report.target.rejected} simulated events: "
                f"{'; '.join(report.target.rejected_samples)}"
            )
        return total, total - len(target.ids), accepted

    async def settle(
        self, sup: Supervisor, client: ControlClient, want: int, progress: Progress
    ) -> int:
        """Poll the store until it counts ``want`` events; the last count read.

        A count that stops short for ``STALL_S`` is a partition that stopped
        moving (docs/architecture.md, "Partition stalls"): the demo does what
        an operator would, and says so: it brings the killed worker back, or
        restarts a running one (SIGTERM, then start), at most ``MAX_RESTARTS``
        times. A count above ``want`` is returned as it is.
        """
        task = progress.add_task("counted", total=want, note="stats in the store, via the sink")
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        counted = last = -1
        moved = time.monotonic()
        restarts = 0
        while True:
            rows = await asyncio.to_thread(
                client.query,
                "SELECT toInt64(sum(requests)) FROM telemetry.model_stats_7d WHERE provider = ''",
            )
            counted = int(rows[0][0]) if rows and rows[0][0] is not None else 0
            progress.update(task, completed=min(counted, want))
            now = time.monotonic()
            if counted == want or now > deadline:
                return counted
            if counted != last:
                last, moved = counted, now
            elif now - moved > STALL_S and counted > want:
                return counted  # counted twice: no restart undoes that; report it
            elif now - moved > STALL_S and restarts < MAX_RESTARTS:
                restarts += 1
                workers = [c for c in sup.children if c.name.startswith("worker-")]
                dead = [c for c in workers if not c.running]
                child = dead[0] if dead else workers[0]
                self.say(
                    f"{want - counted:,} events uncounted and no progress for {STALL_S:.0f} s: "
                    f'a partition stopped moving (docs/architecture.md, "Partition stalls"); '
                    f"{'starting' if dead else 'restarting'} {child.name}"
                )
                child = await sup.restart(child)
                await sup.wait_for_line(child, r"\]: Ready$", timeout=READY_TIMEOUT_S)
                moved = time.monotonic()
            await asyncio.sleep(1.0)

    async def run(self, sup: Supervisor, progress: Progress) -> None:
        o = self.options
        bootstrap = await self.start_broker(sup, progress)
        self.bootstrap = bootstrap
        token = secrets.token_hex(24)
        digest = hashlib.sha256(token.encode()).hexdigest()
        env = _child_env(self.root, bootstrap, self.prefix, digest)
        cluster = progress.add_task("cluster", total=None, note="collector, 2 workers, sink")
        url, victim = await self.start_cluster(sup, env)
        progress.update(cluster, total=1, completed=1, note=f"collector on {url}")
        total, resent, accepted = await self.traffic(sup, url, token, victim, progress)
        unique = total - resent
        client = ControlClient(socket_path(self.root))
        counted = await self.settle(sup, client, unique, progress)

        rows = await asyncio.to_thread(
            client.query_dicts,
            "SELECT * FROM telemetry.model_stats_7d WHERE provider = '' "
            "ORDER BY traffic_tokens DESC",
        )
        progress.stop()
        from telemetry.commands.demo_cmd import page_block

        for row in rows:
            console.print(page_block(row, o.min_sample))
        self.exact = counted == unique and accepted == total
        verdict = "exact" if self.exact else "NOT EXACT"
        console.print(
            Text.assemble(
                Text(f"{verdict}:", style="bold green" if self.exact else "bold red"),
                f" {unique:,} events sent, {counted:,} counted, {resent:,} resent copies dropped",
            ),
            highlight=False,
        )
        if accepted != total:
            console.print(f"the collector accepted {accepted:,} of {total:,} events", style="red")
        out = self.root / "export"
        report = await asyncio.to_thread(
            export_once,
            client,
            ExportOptions(out=out, min_sample=o.min_sample, max_age=timedelta(minutes=10)),
        )
        for line in (
            f"{len(rows)} models; export of {len(report.written)} models in {_shown(out)}",
            f"open {_shown(out / 'index.html')} in a browser for the model pages and charts",
        ):
            console.print(safe_text(line), highlight=False)

    async def cleanup(self, sup: Supervisor) -> None:
        """Stop the children (all at once, SIGTERM), then the broker; within 15 s."""
        stopped = await sup.stop_all()
        for child, status in stopped:
            if status not in (0, None):
                self.say(f"{child.name} stopped with status {status}")
        if self.broker is not None:
            self.say(f"stopping the broker (pid {self.broker.pid()})")
            await asyncio.to_thread(self.broker.remove)
        elif self.bootstrap:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_delete_topics(self.bootstrap, self.prefix), 5)


async def run_kafka_demo(settings: Settings, options: KafkaDemoOptions) -> int:
    """The demo; its exit status (0: exact, 1: failed or not exact, 128+N: signal N)."""
    started = time.perf_counter()
    lock = _lock(settings.data_dir)
    demo = _Demo(settings, options)
    shutil.rmtree(demo.root, ignore_errors=True)
    demo.root.mkdir(parents=True, mode=0o700)
    log = _Log(demo.root / "demo.log")
    demo.log = log
    guard = Guard(demo.root / "demo.log")
    sup = Supervisor(guard, log)
    loop = asyncio.get_running_loop()
    signalled: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not signalled.done():
            signalled.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    demo.say(
        f"{options.events:,} events over a simulated week, then {options.live_s:g} s live at "
        f"{options.rate:g}/s; log in {demo.root / 'demo.log'}; supervisor pid {os.getpid()}, "
        f"orphan guard pid {guard.pid}"
    )
    status = 1
    from telemetry.commands.demo_cmd import demo_progress

    progress = demo_progress()
    log.progress = progress
    try:
        with progress:
            flow = asyncio.create_task(demo.run(sup, progress))
            waits: set[asyncio.Future[Any]] = {flow, sup.failed, signalled}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not flow.done():
                flow.cancel()
                await asyncio.gather(flow, return_exceptions=True)
                if signalled.done():
                    raise _Stopped(signalled.result())
                raise sup.failed.result()
            flow.result()
            status = 0 if demo.exact else 1
    except _Stopped as exc:
        status = 128 + exc.sig
        demo.say(f"{exc.sig.name}: stopping everything")
    except (ChildFailed, TelemetryError, OSError, aiohttp.ClientError) as exc:
        # One line: what failed, in the failing process's own words.
        err_console.print(
            Text.assemble(Text("error:", style="bold red"), " ", safe_text(str(exc) or repr(exc))),
            highlight=False,
            soft_wrap=True,
        )
    finally:
        log.progress = None
        t0 = time.monotonic()
        try:
            await demo.cleanup(sup)
        finally:
            guard.release()
            os.close(lock)
        demo.say(f"everything stopped in {time.monotonic() - t0:.1f} s; nothing left running")
        log.close()
    if status == 0:
        for line in (
            f"the store stays in {_shown(demo.root)}: "
            f"telemetry --data-dir {_shown(demo.root)} stats",
            f"done in {time.perf_counter() - started:.0f} s",
        ):
            console.print(safe_text(line), highlight=False)
    return status
