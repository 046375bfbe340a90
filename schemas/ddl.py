"""ClickHouse DDL as versioned migrations, built by pure functions (no server needed).

A migration is a numbered ``.sql`` file in ``schemas/migrations``; statements
are separated by ``;`` at the end of a line and must be idempotent
(``IF NOT EXISTS``), so applying a migration twice is harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "MIGRATIONS_TABLE",
    "Migration",
    "load_migrations",
    "split_statements",
]

MIGRATIONS_TABLE = "telemetry.schema_migrations"
MIGRATIONS_TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
    "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> list[str]:
    """Split a script on ``;`` at line ends, dropping comment-only chunks."""
    out = []
    for chunk in re.split(r";\s*(?:\n|$)", sql):
        body = "\n".join(
            line for line in chunk.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            out.append(body)
    return out


def load_migrations(*, requests_ttl_days: int) -> list[Migration]:
    """Every migration in version order, with settings substituted."""
    found = []
    for entry in resources.files("schemas.migrations").iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8").replace(
            "{requests_ttl_days}", str(int(requests_ttl_days))
        )
        found.append(Migration(int(match.group(1)), match.group(2), tuple(split_statements(text))))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in schemas/migrations: {versions}")
    return found
