"""`telemetry collector`: the HTTP ingest service for gateways not written in Python."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from collector.auth import TokenAuth
from collector.http.app import DEFAULT_MAX_BODY, DEFAULT_MAX_DECOMPRESSED
from collector.server import ServiceConfig, serve
from collector.spool import DEFAULT_MAX_BYTES
from schemas.errors import ConfigError
from telemetry.context import console, fail, settings_from
from telemetry.pipeline import require
from telemetry.pipeline.kafka import KafkaPipeline


def register(app: typer.Typer) -> None:
    @app.command("collector")
    def collector(
        ctx: typer.Context,
        host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8080,
        max_body: Annotated[
            int, typer.Option(help="largest request body accepted, in bytes (as sent)")
        ] = DEFAULT_MAX_BODY,
        max_decompressed: Annotated[
            int, typer.Option(help="largest body once gzip/zstd is undone, in bytes")
        ] = DEFAULT_MAX_DECOMPRESSED,
        spool_dir: Annotated[
            Path | None,
            typer.Option(help="disk spool for events Kafka cannot take [default: DATA_DIR/spool]"),
        ] = None,
        spool_max_bytes: Annotated[
            int, typer.Option(help="spool size bound; past it the oldest events are dropped")
        ] = DEFAULT_MAX_BYTES,
        max_backlog: Annotated[
            int, typer.Option(help="events in memory before clients get 429 + Retry-After")
        ] = 200_000,
        insecure_no_auth: Annotated[
            bool,
            typer.Option(
                "--insecure-no-auth",
                help="accept requests without a bearer token (only on a trusted network)",
            ),
        ] = False,
    ) -> None:
        """HTTP ingest: POST /v1/events (JSON array or NDJSON) to Kafka, with a disk spool.

        Needs TELEMETRY_KAFKA. Tokens: TELEMETRY_INGEST_TOKENS, comma-separated sha256
        hex digests of the gateways' bearer tokens (printf %s TOKEN | sha256sum | cut -d' ' -f1).
        """
        settings = settings_from(ctx)
        pipeline = require(
            settings,
            KafkaPipeline,
            "`telemetry collector` needs a broker: set TELEMETRY_KAFKA (or --kafka) to the "
            "Kafka bootstrap servers",
        )
        try:
            auth = TokenAuth.from_setting(settings.ingest_tokens)
            config = ServiceConfig(
                bootstrap_servers=pipeline.broker,
                spool_dir=spool_dir or settings.data_dir / "spool",
                auth=auth,
                insecure_no_auth=insecure_no_auth,
                host=host,
                port=port,
                topic=settings.topic,
                dlq_topic=settings.dlq_topic,
                max_body=max_body,
                max_decompressed=max_decompressed,
                spool_max_bytes=spool_max_bytes,
                max_backlog=max_backlog,
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
            )
            config.validate()
        except ConfigError as exc:
            fail(str(exc), 2)

        def listening(url: str) -> None:
            console.print(f"telemetry collector listening on {url}", highlight=False)

        try:
            asyncio.run(serve(config, on_listening=listening))
        except ConfigError as exc:
            fail(str(exc), 2)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
