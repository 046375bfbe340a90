"""Entry point of the ``telemetry`` command.

Global flags override ``TELEMETRY_*`` variables; each subcommand lives in its
own module under ``telemetry.commands`` and registers itself on ``app``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from schemas.errors import TelemetryError
from schemas.settings import Settings
from telemetry.context import exit_code_for, fail

app = typer.Typer(
    name="telemetry",
    help="Telemetry for an LLM gateway's model pages: events in, rolling 7-day stats out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers [env TELEMETRY_KAFKA; unset: embedded]"),
    ] = None,
    clickhouse: Annotated[
        str | None,
        typer.Option(
            help="ClickHouse DSN, chdb://PATH or http(s)://... [env TELEMETRY_CLICKHOUSE]"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="embedded state directory [env TELEMETRY_DATA_DIR]")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Expected failures get one line from us; their libraries' retries are noise.
        for noisy in ("urllib3", "clickhouse_connect", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {"kafka": kafka, "clickhouse": clickhouse, "data_dir": data_dir}.items()
        if v is not None
    }
    try:
        ctx.obj = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        fail(f"TELEMETRY_{name.upper()} (--{name.replace('_', '-')}): {err['msg']}", 2)


def _register() -> None:
    from telemetry.commands import (
        collector_cmd,
        demo_cmd,
        export_cmd,
        ingest_cmd,
        migrate_cmd,
        run_cmd,
        simulate_cmd,
        sql_cmd,
        stats_cmd,
        status_cmd,
        worker_cmd,
    )

    for module in (
        run_cmd,
        demo_cmd,
        ingest_cmd,
        stats_cmd,
        status_cmd,
        export_cmd,
        collector_cmd,
        worker_cmd,
        migrate_cmd,
        sql_cmd,
        simulate_cmd,
    ):
        module.register(app)


_register()


def main() -> None:
    os.environ.setdefault("PYTHONFAULTHANDLER", "0")
    try:
        app()
    except TelemetryError as exc:
        fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
