"""`telemetry migrate`: apply the ClickHouse DDL (idempotent)."""

from __future__ import annotations

import typer

from processors.clickhouse import describe_dsn
from processors.migrate import migrate
from processors.store import open_store
from telemetry.context import console, settings_from


def register(app: typer.Typer) -> None:
    @app.command("migrate")
    def migrate_cmd(ctx: typer.Context) -> None:
        """Create or upgrade the `telemetry` database (safe to run again)."""
        settings = settings_from(ctx)
        ch = open_store(settings, auto_migrate=False)
        applied = migrate(ch, requests_ttl_days=settings.requests_ttl_days)
        target = describe_dsn(settings.clickhouse_dsn)
        if applied:
            console.print(f"applied {', '.join(applied)} to {target}")
        else:
            console.print(f"{target} is up to date")
