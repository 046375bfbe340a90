"""`telemetry run`: HTTP ingest, stats refresh, scheduled exports and the control socket.

Ingest, refresh and exports share the writer handle; the control socket reads
on handles of its own (``serve_store``, ``SerialStore``). The refresh is the same
``processors.embedded.refresh`` that `telemetry ingest` runs, so the maths is
the aggregation core's, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from collector.auth import TokenAuth
from collector.http.app import IngestLimits, create_app
from processors.embedded.refresh import Refresher, RefreshReport
from processors.export.run import ExportOptions, ExportReport, export_once
from processors.store import open_store
from schemas.errors import ConfigError, TelemetryError
from schemas.settings import Settings
from telemetry.service.control import serve_store, socket_path
from telemetry.service.handoff import StoreHandoff

__all__ = ["RefreshHealth", "RunConfig", "run_embedded"]

log = logging.getLogger(__name__)


@dataclass
class RefreshHealth:
    """Whether the stats are being refreshed; what /readyz says when they are not."""

    failures: int = 0
    last_error: str = ""
    failing_since: datetime | None = None

    def refreshed(self) -> None:
        self.failures, self.last_error, self.failing_since = 0, "", None

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self.failing_since = self.failing_since or datetime.now(UTC)

    def problem(self) -> str | None:
        if not self.failures:
            return None
        since = self.failing_since.isoformat() if self.failing_since else "?"
        return f"stats refresh failing since {since} ({self.failures} attempts): {self.last_error}"


@dataclass
class RunConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    refresh_every_s: float = 30.0
    export_every_s: float | None = 300.0
    export_dir: Path | None = None
    insecure_no_auth: bool = False
    limits: IngestLimits = field(default_factory=IngestLimits)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_auth(settings: Settings, config: RunConfig) -> TokenAuth | None:
    auth = TokenAuth.from_setting(settings.ingest_tokens)
    if auth is None and not (config.insecure_no_auth or _loopback(config.host)):
        raise ConfigError(
            f"--host {config.host} is reachable from other machines and TELEMETRY_INGEST_TOKENS "
            "is not set: set it to the sha256 digests of the gateways' tokens, or pass "
            "--insecure-no-auth"
        )
    return auth


async def run_embedded(
    settings: Settings,
    config: RunConfig,
    *,
    stop: asyncio.Event | None = None,
    on_event: Callable[[str], None] = print,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    auth = resolve_auth(settings, config)
    writer = open_store(settings)
    shared = contextlib.AsyncExitStack()
    store = await shared.enter_async_context(serve_store(settings, writer))
    handoff = StoreHandoff(store)
    health = RefreshHealth()
    app = create_app(
        handoff=handoff,
        auth=auth,
        registry=CollectorRegistry(),
        limits=config.limits,
        problem=health.problem,
    )
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except BaseException:
        # e.g. the port is taken: leave no socket file and no read threads behind
        await runner.cleanup()
        await shared.aclose()
        raise
    port = runner.addresses[0][1] if runner.addresses else config.port  # when 0 was asked
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    on_event(f"ingest: POST http://{config.host}:{port}/v1/events")
    on_event(f"ingest: OTLP/HTTP traces: POST http://{config.host}:{port}/v1/traces")
    if on_listening:
        on_listening(f"http://{config.host}:{port}")
    on_event(f"control socket: {socket_path(settings.data_dir)}")

    export_dir = config.export_dir or settings.data_dir / "export"
    # The buckets stay in memory between refreshes: this process is the store's only writer.
    buckets = Refresher()

    async def refresher() -> None:
        while not stop.is_set():
            try:
                report: RefreshReport = await store.run(buckets.refresh)
                health.refreshed()
                if report.new_rows:
                    on_event(
                        f"refresh: {report.new_rows} new events, "
                        f"{report.buckets_updated} buckets, {report.stats_rows} stats rows"
                    )
            except Exception as exc:
                # Whatever the cause, the loop lives on: a refresh that fails is
                # said in the log, shown by /readyz, and tried again next interval.
                health.failed(exc)
                if not isinstance(exc, TelemetryError):
                    log.exception("refresh failed")
                on_event(f"refresh failed (will retry in {config.refresh_every_s:g} s): {exc!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), config.refresh_every_s)

    async def exporter() -> None:
        assert config.export_every_s is not None
        options = ExportOptions(
            out=export_dir, max_age=timedelta(seconds=3 * config.refresh_every_s + 60)
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), config.export_every_s)
            if stop.is_set():
                break
            try:
                rep: ExportReport = await store.run(export_once, options)
                on_event(f"export: {len(rep.written)} models written to {rep.out}")
            except Exception as exc:
                # Like the refresh: said, and tried again next interval.
                if not isinstance(exc, TelemetryError):
                    log.exception("export failed")
                on_event(f"export failed (will retry): {exc}")

    tasks = [asyncio.create_task(refresher())]
    if config.export_every_s:
        tasks.append(asyncio.create_task(exporter()))
    try:
        await stop.wait()
    finally:
        on_event("stopping: finishing requests in progress")
        # The socket closes and its reads are killed now, not at their time bound.
        await shared.aclose()
        await runner.cleanup()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TelemetryError):
            await store.run(buckets.refresh)
