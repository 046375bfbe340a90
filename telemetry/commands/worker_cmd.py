"""`telemetry worker`: the Faust worker (or, with --sink, the ClickHouse sink)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from processors.kafka_io import ensure_topics
from processors.worker.tables import changelog_topics
from telemetry.context import console, fail, settings_from


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
    ) -> None:
        """Consume telemetry.requests.v1 and keep the rolling 7-day stats (needs TELEMETRY_KAFKA).

        Run several for more throughput: they share the work by partition. Run one
        `telemetry worker --sink` to write events and stats to ClickHouse.
        """
        settings = settings_from(ctx)
        bootstrap = settings.kafka
        if not bootstrap:
            fail("the worker needs a broker: set TELEMETRY_KAFKA (or --kafka HOST:PORT)", 2)
        if interval is not None:
            settings = settings.model_copy(update={"stats_interval_s": interval})
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
        import faust

        from processors.worker.app import create_app

        faust_app = create_app(settings, bootstrap=bootstrap, app_id=app_id, data_dir=state_dir)
        console.print(
            f"worker {faust_app.conf.id} on {bootstrap}, state in {faust_app.conf.datadir}"
        )
        faust.Worker(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()


def _run_sink(settings: object, bootstrap: str) -> None:
    from processors.sinks.kafka_sink import run_sink
    from processors.store import open_store
    from schemas.settings import Settings
    from telemetry.embedded.control import serve_store, socket_path

    assert isinstance(settings, Settings)
    ch = open_store(settings)
    console.print(f"sink {bootstrap} -> ClickHouse")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as shared:
            if settings.clickhouse is None:
                # The sink owns the embedded store: other shells read through it.
                await shared.enter_async_context(serve_store(settings, ch))
                console.print(f"control socket: {socket_path(settings.data_dir)}")
            await run_sink(settings, ch, bootstrap=bootstrap, stop=stop)

    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(main())
