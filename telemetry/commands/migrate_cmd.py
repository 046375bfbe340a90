"""`telemetry migrate`: apply the ClickHouse DDL (idempotent)."""

from __future__ import annotations

import typer

from processors.clickhouse import describe_dsn
from processors.migrate import migrate
from processors.store import open_store
from schemas.ddl import MIGRATIONS_TABLE, load_migrations
from schemas.errors import OperationalError
from telemetry.context import console, fail, settings_from
from telemetry.safe_text import safe_text
from telemetry.service.control import ControlClient, socket_path


def register(app: typer.Typer) -> None:
    @app.command("migrate")
    def migrate_cmd(ctx: typer.Context) -> None:
        """Create or upgrade the `telemetry` database (safe to run again).

        While another process owns the embedded store (`telemetry run`, the
        sink), it was migrated when that process opened it: this checks so
        through its control socket and changes nothing.
        """
        settings = settings_from(ctx)
        target = describe_dsn(settings.clickhouse_dsn)
        try:
            ch = open_store(settings, auto_migrate=False)
        except OperationalError:
            sock = socket_path(settings.data_dir)
            if settings.clickhouse is not None or not sock.exists():
                raise
            _check_through(ControlClient(sock), target, settings.requests_ttl_days)
            return
        applied = migrate(ch, requests_ttl_days=settings.requests_ttl_days)
        if applied:
            console.print(f"applied {', '.join(applied)} to {target}")
        else:
            console.print(f"{target} is up to date")


def _check_through(client: ControlClient, target: str, ttl_days: int) -> None:
    """Read the applied versions through the owner; fail in one line if any is missing."""
    rows = client.query(f"SELECT version FROM {MIGRATIONS_TABLE} FINAL")
    done = {int(r[0]) for r in rows}
    missing = [
        f"{m.version:04d}_{m.name}"
        for m in load_migrations(requests_ttl_days=ttl_days)
        if m.version not in done
    ]
    if missing:
        fail(
            f"{target} lacks {', '.join(missing)} and is owned by {client.owner}: "
            "stop it and run `telemetry migrate` again",
        )
    console.print(
        safe_text(f"{target} is up to date (checked through {client.owner}, which owns it)"),
        highlight=False,
    )
