"""The one place that talks to ClickHouse, over ``chdb://`` (in-process) or ``http(s)://``.

Nothing else in the code knows which transport is behind a DSN. Caller
mistakes (a DSN we cannot use) raise ``ConfigError``; a server or engine that
fails raises ``OperationalError`` (retriable).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from processors.sql_guard import ReadOnlyViolation, check_ast
from schemas.errors import ConfigError, OperationalError

__all__ = ["ClickHouse", "ReadLimits", "Reader", "connect", "describe_dsn"]

log = logging.getLogger(__name__)
_SCHEMES = ("chdb", "http", "https")


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return dsn


def _chdb_path(dsn: str) -> Path | None:
    parts = urlsplit(dsn)
    if parts.scheme != "chdb":
        return None
    path = (parts.netloc + parts.path) if parts.netloc else parts.path
    return Path(path) if path and path != ":memory:" else None


def validate_dsn(dsn: str) -> None:
    """Reject a DSN we cannot use before anything connects (names the variable)."""
    scheme = urlsplit(dsn).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"TELEMETRY_CLICKHOUSE={describe_dsn(dsn)!r}: scheme must be one of "
            f"chdb://PATH, http://HOST:PORT or https://HOST:PORT"
        )
    if scheme in ("http", "https") and not urlsplit(dsn).hostname:
        raise ConfigError(f"TELEMETRY_CLICKHOUSE={describe_dsn(dsn)!r}: missing host")


class Reader(Protocol):
    """What a read needs: ``ClickHouse`` itself, or the control socket of the process
    that owns the embedded store (``telemetry.service.control.ControlClient``), so
    the readers (stats, sql, export) work the same whoever holds the store."""

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> Sequence[Sequence[Any]]: ...

    def query_dicts(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...

    def query_table(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], Sequence[Sequence[Any]]]: ...

    def close(self) -> None: ...


class ClickHouse:
    """A thin front over a clickhouse-connect client.

    Every method the pipeline needs is implemented here once; the transport
    (chDB or HTTP) only decides how the client is built.
    """

    def __init__(self, client: Any, dsn: str, *, readonly: bool = False) -> None:
        self._client = client
        self.dsn = dsn
        #: every query is checked by ``processors.sql_guard`` before it runs
        self.readonly = readonly

    @property
    def is_embedded(self) -> bool:
        return urlsplit(self.dsn).scheme == "chdb"

    def check_read(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Refuse (``QueryError``) a query that read-only SQL does not allow.

        The engine parses the query (``EXPLAIN AST`` runs nothing) and
        ``check_ast`` decides on that tree; a query the engine cannot parse is
        refused with the engine's own message.

        First, though, the text must be one statement. chDB runs every
        statement of a ``;``-separated text, and ``EXPLAIN AST`` shows only
        the first: the others would run during the check itself, unchecked.
        ``formatQuery`` gets the text as a value (nothing of it runs) and
        refuses several statements.
        """
        self._parse("SELECT formatQuery({q:String})", {"q": sql}, "one statement at a time")
        rows = self._parse(f"EXPLAIN AST\n{sql}", parameters, "the query could not be checked")
        try:
            check_ast([str(row[0]) for row in rows])
        except ReadOnlyViolation as exc:
            raise QueryError(str(exc)) from None

    def _parse(
        self, sql: str, parameters: dict[str, Any] | None, refusal: str
    ) -> Sequence[Sequence[Any]]:
        """Rows of a parse-only query of ``check_read``; its failure refuses the query.

        In-process, the engine cannot be down: a failure means the query did
        not parse, and its first line says why. Over HTTP it may be the server.
        """
        try:
            rows: Sequence[Sequence[Any]] = self._client.query(
                sql, parameters=parameters
            ).result_rows
            return rows
        except Exception as exc:
            if not self.is_embedded:
                raise _wrap(exc, sql.split()[0]) from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QueryError(f"read-only SQL: {refusal}: {first}") from None

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        if self.readonly:
            self.check_read(sql, parameters)
        try:
            return self._client.command(sql, parameters=parameters)
        except Exception as exc:
            raise _wrap(exc, sql) from exc

    def query_typed(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
        """Column names, ClickHouse type names and rows (read in full, errors wrapped)."""
        if self.readonly:
            self.check_read(sql, parameters)
        try:
            result = self._client.query(sql, parameters=parameters)
            rows = list(result.result_rows)
        except Exception as exc:
            raise _wrap(exc, sql) from exc
        return list(result.column_names), [t.name for t in result.column_types], rows

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.query_typed(sql, parameters)[2]

    def query_table(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows, for printing."""
        names, _, rows = self.query_typed(sql, parameters)
        return names, rows

    def query_dicts(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        names, rows = self.query_table(sql, parameters)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """The result as a ``pyarrow.Table``: many rows without a Python object per value."""
        if self.readonly:
            self.check_read(sql, parameters)
        try:
            return self._client.query_arrow(sql, parameters=parameters, use_strings=True)
        except Exception as exc:
            raise _wrap(exc, sql) from exc

    def insert_arrow(self, table: str, data: Any) -> int:
        """Insert a ``pyarrow.Table`` as one block (its column names are the table's)."""
        if not data.num_rows:
            return 0
        try:
            self._client.insert_arrow(table, data)
        except Exception as exc:
            raise _wrap(exc, f"INSERT INTO {table}") from exc
        return int(data.num_rows)

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup_token: str | None = None,
    ) -> int:
        """Insert one block. ``dedup_token`` makes a retried block a no-op.

        Tables set ``non_replicated_deduplication_window``, so a block inserted
        again with the same token (a retry after a timeout, a sink that crashed
        before committing its offsets) is dropped by ClickHouse itself.
        """
        if not rows:
            return 0
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        try:
            self._client.insert(table, rows, column_names=list(column_names), settings=settings)
        except Exception as exc:
            raise _wrap(exc, f"INSERT INTO {table}") from exc
        return len(rows)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing is best effort
            log.debug("closing ClickHouse client failed", exc_info=True)


def _wrap(exc: Exception, what: str) -> Exception:
    from clickhouse_connect.driver import exceptions as chx

    if isinstance(exc, chx.OperationalError):
        return OperationalError(f"ClickHouse unavailable during {what.split()[0]}: {exc}")
    if isinstance(exc, chx.ClickHouseError):
        msg = str(exc).split("\n")[0]
        return QueryError(msg)
    return exc


class QueryError(ConfigError):
    """ClickHouse refused a statement (syntax, unknown table, read-only, ...)."""


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Bounds on one read-only query, so that no reader can starve the writer.

    The defaults come from ``Settings`` (``TELEMETRY_SQL_*``).
    """

    timeout_s: float = 30.0
    max_memory: int = 2 << 30
    max_result_rows: int = 1_000_000

    def session_settings(self) -> dict[str, Any]:
        return {
            "max_execution_time": self.timeout_s,
            "max_memory_usage": self.max_memory,
            "max_result_rows": self.max_result_rows,
            "result_overflow_mode": "throw",
        }


def connect(
    dsn: str,
    *,
    settings: dict[str, Any] | None = None,
    readonly: bool = False,
    limits: ReadLimits | None = None,
) -> ClickHouse:
    """Validate the DSN, then connect. Keyword-only beyond the DSN; no queries run.

    ``readonly`` gives a client for other people's SQL: its session is
    ``readonly=1`` in chDB, 2 over HTTP (no writes, no DDL; in chDB no setting
    may change, not even per query), bounded by ``limits``, its database is
    ``telemetry``, and every query passes ``processors.sql_guard`` first. In
    chDB, settings stick to the session (one handle per client), so read-only
    is a property of the client, never of one query.
    """
    client_kwargs: dict[str, Any] = {}
    if readonly:
        # chDB applies each setting with SET, in order, and readonly=1 refuses the
        # ones after it. Over HTTP, settings travel with every request, which
        # readonly=1 would refuse; there readonly=2 keeps the limits settable by
        # us, and sql_guard refuses SET and SETTINGS in the queries themselves.
        settings = {**(settings or {}), **(limits or ReadLimits()).session_settings()}
        settings["readonly"] = 1 if urlsplit(dsn).scheme == "chdb" else 2
        client_kwargs["database"] = "telemetry"
    validate_dsn(dsn)
    import clickhouse_connect
    from clickhouse_connect.driver import exceptions as chx

    path = _chdb_path(dsn)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_stderr(path is not None):
            client = clickhouse_connect.get_client(
                dsn=dsn, settings=settings or {}, **client_kwargs
            )
    except chx.OperationalError as exc:
        del exc
        raise OperationalError(
            f"cannot reach ClickHouse at {describe_dsn(dsn)}: check TELEMETRY_CLICKHOUSE "
            "and that the server is up"
        ) from None
    except chx.ProgrammingError as exc:
        if path is not None:
            raise OperationalError(
                f"the embedded ClickHouse at {path} is in use by another process "
                f"(chDB admits one process per data directory{_owner_hint(path)}); "
                "stop it, or point TELEMETRY_DATA_DIR elsewhere"
            ) from None
        raise ConfigError(f"TELEMETRY_CLICKHOUSE={describe_dsn(dsn)!r}: {exc}") from None
    except chx.ClickHouseError as exc:
        raise ConfigError(
            f"TELEMETRY_CLICKHOUSE={describe_dsn(dsn)!r}: {str(exc).splitlines()[0]}"
        ) from None
    return ClickHouse(client, dsn, readonly=readonly)


@contextlib.contextmanager
def _quiet_stderr(active: bool) -> Iterator[None]:
    """chDB's engine prints its own errors straight to fd 2; we report them in one line."""
    if not active:
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _owner_hint(path: Path) -> str:
    owner = path.parent / "owner.pid"
    try:
        pid = int(owner.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return ""
    return f"; owned by pid {pid}"
