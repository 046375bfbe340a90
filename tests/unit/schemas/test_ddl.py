"""The ClickHouse DDL as data: statement splitting, migration order, the tables users rely on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas import ddl
from schemas.ddl import MIGRATIONS_TABLE_DDL, load_migrations, split_statements
from schemas.event import RequestEvent
from schemas.stats import HOURLY_COLUMNS, STATS_COLUMNS

TTL = 30


def test_split_statements_on_line_end_semicolons() -> None:
    sql = (
        "-- header comment\n"
        "CREATE DATABASE IF NOT EXISTS x;\n"
        "\n"
        "CREATE TABLE IF NOT EXISTS x.t\n"
        "(\n"
        "    a UInt8, -- inline comment stays\n"
        "    b String DEFAULT 'a;b'\n"
        ")\n"
        "ENGINE = MergeTree ORDER BY a;   \n"
        "-- only a comment;\n"
        "SELECT 1; SELECT 2\n"
    )
    assert split_statements(sql) == [
        "CREATE DATABASE IF NOT EXISTS x",
        "CREATE TABLE IF NOT EXISTS x.t\n(\n    a UInt8, -- inline comment stays\n"
        "    b String DEFAULT 'a;b'\n)\nENGINE = MergeTree ORDER BY a",
        "SELECT 1; SELECT 2",
    ]


@pytest.mark.parametrize("sql", ["", "\n\n", "-- nothing\n-- here;\n", ";\n;\n"])
def test_split_statements_of_nothing(sql: str) -> None:
    assert split_statements(sql) == []


def test_last_statement_without_semicolon() -> None:
    assert split_statements("SELECT 1;\nSELECT 2") == ["SELECT 1", "SELECT 2"]


def test_migrations_in_version_order_and_unique() -> None:
    migrations = load_migrations(requests_ttl_days=TTL)
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert versions[0] == 1
    assert all(m.statements for m in migrations)
    assert all(re.fullmatch(r"[a-z0-9_]+", m.name) for m in migrations)


def test_ttl_is_substituted() -> None:
    for days in (8, 30, 365):
        text = "\n".join(s for m in load_migrations(requests_ttl_days=days) for s in m.statements)
        assert "{" not in text and "}" not in text
        assert f"INTERVAL {days} DAY" in text


def test_duplicate_versions_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE DATABASE IF NOT EXISTS a;\n")
    (tmp_path / "0001_b.sql").write_text("CREATE DATABASE IF NOT EXISTS b;\n")
    (tmp_path / "README.md").write_text("not a migration")
    monkeypatch.setattr(ddl.resources, "files", lambda _pkg: tmp_path)
    with pytest.raises(RuntimeError, match="duplicate"):
        load_migrations(requests_ttl_days=TTL)


def test_non_migration_files_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "0002_second.sql").write_text("CREATE DATABASE IF NOT EXISTS b;\n")
    (tmp_path / "0001_first.sql").write_text("CREATE DATABASE IF NOT EXISTS a;\n")
    (tmp_path / "1_bad.sql").write_text("DROP DATABASE a;\n")
    (tmp_path / "__init__.py").write_text("")
    monkeypatch.setattr(ddl.resources, "files", lambda _pkg: tmp_path)
    assert [(m.version, m.name) for m in load_migrations(requests_ttl_days=TTL)] == [
        (1, "first"),
        (2, "second"),
    ]


def _statements() -> list[str]:
    return [s for m in load_migrations(requests_ttl_days=TTL) for s in m.statements]


def test_every_statement_is_idempotent() -> None:
    for stmt in [*_statements(), MIGRATIONS_TABLE_DDL]:
        assert re.match(
            r"CREATE\s+(DATABASE|TABLE|VIEW|MATERIALIZED VIEW)\s+IF NOT EXISTS\s", stmt
        ), stmt


_CREATE = re.compile(r"CREATE\s+(TABLE|VIEW)\s+IF NOT EXISTS\s+([\w.]+)")


def _objects() -> dict[str, str]:
    out = {}
    for stmt in _statements():
        match = _CREATE.match(stmt)
        if match:
            out[match.group(2)] = stmt
    return out


def _columns(name: str) -> list[str]:
    """Columns of a table, following a view's ``SELECT * FROM`` to its table."""
    objects = _objects()
    stmt = objects[name]
    view = re.search(r"AS\s+SELECT\s+\*\s+FROM\s+([\w.]+)", stmt)
    if view:
        return _columns(view.group(1))
    body = stmt[stmt.index("(") + 1 :]
    cols = []
    for line in body.splitlines():
        match = re.match(r"\s{4}(\w+)\s+\w", line)
        if match and match.group(1) not in ("INDEX", "PROJECTION", "CONSTRAINT"):
            cols.append(match.group(1))
    return cols


def test_tables_named_in_product_md_exist() -> None:
    objects = _objects()
    for name in ("requests", "model_stats_7d", "model_stats_hourly", "rejected"):
        assert f"telemetry.{name}" in objects, sorted(objects)


def test_requests_has_every_event_field() -> None:
    cols = _columns("telemetry.requests")
    assert set(RequestEvent.model_fields) <= set(cols)


@pytest.mark.parametrize(
    ("table", "columns"),
    [("telemetry.model_stats_7d", STATS_COLUMNS), ("telemetry.model_stats_hourly", HOURLY_COLUMNS)],
)
def test_stats_tables_have_every_column(table: str, columns: tuple[str, ...]) -> None:
    cols = _columns(table)
    assert list(columns) == [c for c in cols if c in columns], (table, cols)
    assert set(columns) == set(cols)


def test_stats_columns_follow_product_md() -> None:
    for name in (
        "requests",
        "input_tokens",
        "output_tokens",
        "traffic_tokens",
        "errors",
        "error_rate",
        "ttft_p50_ms",
        "ttft_p95_ms",
        "ttft_p99_ms",
        "output_tps_p50",
        "as_of",
        "window_start",
        "model",
        "provider",
    ):
        assert name in STATS_COLUMNS
