"""`telemetry run`: the whole pipeline in one process, embedded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from schemas.errors import ConfigError
from telemetry.context import console, fail, settings_from
from telemetry.pipeline import require
from telemetry.pipeline.embedded import EmbeddedPipeline
from telemetry.safe_text import safe_text
from telemetry.service.run import RunConfig, run_embedded


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        ctx: typer.Context,
        host: Annotated[str, typer.Option(help="address for HTTP ingest")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="port for HTTP ingest (0: any free port)")] = 8080,
        refresh_every: Annotated[
            float,
            typer.Option(
                help="seconds between stats refreshes [default: TELEMETRY_STATS_INTERVAL_S, 30]",
                show_default=False,
            ),
        ] = 0,
        export_every: Annotated[
            float, typer.Option(help="seconds between catalog exports (0: no exports)")
        ] = 300,
        export_dir: Annotated[
            Path | None, typer.Option(help="export tree [default: DATA_DIR/export]")
        ] = None,
        insecure_no_auth: Annotated[
            bool,
            typer.Option("--insecure-no-auth", help="accept unauthenticated ingest on any address"),
        ] = False,
    ) -> None:
        """HTTP ingest, stats refresh and scheduled exports in one process; no broker.

        Events accepted over HTTP are in the embedded ClickHouse before the answer.
        While it runs, `telemetry stats` and `telemetry sql` from another shell read
        through its local socket. On 127.0.0.1 no token is needed; elsewhere set
        TELEMETRY_INGEST_TOKENS (or --insecure-no-auth).
        """
        settings = settings_from(ctx)
        require(
            settings,
            EmbeddedPipeline,
            "`telemetry run` is the embedded pipeline; unset TELEMETRY_KAFKA, or run "
            "`telemetry collector`, `telemetry worker` and `telemetry worker --sink`",
        )
        config = RunConfig(
            host=host,
            port=port,
            refresh_every_s=refresh_every or settings.stats_interval_s,
            export_every_s=export_every or None,
            export_dir=export_dir,
            insecure_no_auth=insecure_no_auth,
        )

        def say(line: str) -> None:
            # Lines quote paths and errors (a store error can quote data): literal text.
            console.print(safe_text(line), highlight=False)

        try:
            asyncio.run(run_embedded(settings, config, on_event=say))
        except ConfigError as exc:
            fail(str(exc), 2)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
