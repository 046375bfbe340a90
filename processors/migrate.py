"""Apply the versioned migrations of ``schemas/migrations`` to a ClickHouse."""

from __future__ import annotations

from processors.clickhouse import ClickHouse
from schemas.ddl import MIGRATIONS_TABLE, MIGRATIONS_TABLE_DDL, load_migrations

__all__ = ["applied_versions", "migrate"]


def applied_versions(ch: ClickHouse) -> set[int]:
    rows = ch.query(f"SELECT version FROM {MIGRATIONS_TABLE} FINAL")
    return {int(r[0]) for r in rows}


def migrate(ch: ClickHouse, *, requests_ttl_days: int) -> list[str]:
    """Apply pending migrations in order; return the names applied (empty if none).

    Each statement is idempotent, so a migration interrupted halfway is simply
    applied again on the next run.
    """
    ch.command("CREATE DATABASE IF NOT EXISTS telemetry")
    ch.command(MIGRATIONS_TABLE_DDL)
    done = applied_versions(ch)
    applied = []
    for m in load_migrations(requests_ttl_days=requests_ttl_days):
        if m.version in done:
            continue
        for stmt in m.statements:
            ch.command(stmt)
        ch.insert(MIGRATIONS_TABLE, [(m.version, m.name)], ("version", "name"))
        applied.append(f"{m.version:04d}_{m.name}")
    return applied
