"""Run the ingest service: an emitter, its handoff, the aiohttp app, until SIGTERM/SIGINT.

Start-up order: validate everything (config errors name the flag or variable),
open the spool, try Kafka (unreachable is fine: events are spooled), then
listen. Shutdown: stop accepting, finish the requests in progress, close the
emitter (flush within ``close_timeout_s``, spool the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.auth import TokenAuth
from collector.emitter import TelemetryEmitter
from collector.handoff import EmitterHandoff
from collector.http.app import DEFAULT_MAX_BODY, DEFAULT_MAX_DECOMPRESSED, IngestLimits, create_app
from collector.spool import DEFAULT_MAX_BYTES
from collector.topics import ensure_topics
from schemas.errors import ConfigError, OperationalError
from schemas.settings import DEFAULT_TOPIC, DLQ_TOPIC

__all__ = ["ServiceConfig", "serve"]

log = logging.getLogger(__name__)


@dataclass
class ServiceConfig:
    bootstrap_servers: str
    spool_dir: Path
    auth: TokenAuth | None
    insecure_no_auth: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    topic: str = DEFAULT_TOPIC
    dlq_topic: str = DLQ_TOPIC
    max_body: int = DEFAULT_MAX_BODY
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    max_backlog: int = 200_000
    #: partitions of the topics when this service is the first to need them
    partitions: int = 4
    replication_factor: int = 1
    close_timeout_s: float = 10.0
    emitter_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> IngestLimits:
        if self.auth is None and not self.insecure_no_auth:
            raise ConfigError(
                "TELEMETRY_INGEST_TOKENS is not set: refusing to start an ingest service that "
                "anyone can write to. Set it to the sha256 digests of the gateways' tokens "
                "(printf %s TOKEN | sha256sum | cut -d' ' -f1), or pass --insecure-no-auth "
                "for a trusted network"
            )
        if self.spool_max_bytes < 64 * 1024:
            raise ConfigError(
                f"--spool-max-bytes must be at least 65536, got {self.spool_max_bytes}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        try:
            return IngestLimits(self.max_body, max(self.max_decompressed, self.max_body))
        except ValueError as exc:
            raise ConfigError(f"--max-body: {exc}") from None


async def serve(
    config: ServiceConfig,
    *,
    on_listening: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set; without ``stop``, until SIGTERM or SIGINT."""
    limits = config.validate()
    if config.auth is None:
        log.warning("ingest service runs WITHOUT authentication (--insecure-no-auth)")
    await _create_topics(config)
    emitter = TelemetryEmitter(
        bootstrap_servers=config.bootstrap_servers,
        spool_dir=config.spool_dir,
        topic=config.topic,
        dlq_topic=config.dlq_topic,
        spool_max_bytes=config.spool_max_bytes,
        max_backlog=config.max_backlog,
        client_id="telemetry-collector",
        **config.emitter_options,
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not in the main thread: nothing to install, the caller must pass ``stop``.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    await emitter.start()
    runner: web.AppRunner | None = None
    try:
        app = create_app(
            handoff=EmitterHandoff(emitter),
            auth=config.auth,
            registry=emitter.metrics.registry,
            limits=limits,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        addresses = runner.addresses
        host, port = addresses[0][:2] if addresses else (config.host, config.port)
        url = f"http://{host}:{port}"
        log.info("telemetry collector listening on %s", url)
        if on_listening is not None:
            on_listening(url)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await emitter.close(config.close_timeout_s)


async def _create_topics(config: ServiceConfig) -> None:
    """Best effort: an unreachable broker is fine here (events are spooled until it answers)."""
    from aiokafka.errors import KafkaError

    try:
        await ensure_topics(
            config.bootstrap_servers,
            [config.topic, config.dlq_topic],
            partitions=config.partitions,
            replication_factor=config.replication_factor,
        )
    except (OperationalError, KafkaError) as exc:
        log.warning("topics not checked at start-up (events are spooled meanwhile): %s", exc)
