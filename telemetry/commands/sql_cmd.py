"""`telemetry sql`: one query against the configured ClickHouse."""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from telemetry.context import console, fail, settings_from
from telemetry.safe_text import safe_text
from telemetry.service.control import open_reader


class Format(StrEnum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"
    tsv = "tsv"


def _plain(v: Any) -> Any:
    """A value as the machine formats write it: exactly the data (bytes as UTF-8 text)."""
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def _table(names: list[str], rows: list[tuple[Any, ...]]) -> Table:
    """The result for a person: every header and cell literal text, controls made visible."""
    table = Table(show_lines=False)
    for name in names:
        table.add_column(safe_text(name))
    for row in rows:
        table.add_row(*(safe_text("NULL" if v is None else _plain(v)) for v in row))
    return table


def print_result(names: list[str], rows: list[tuple[Any, ...]], fmt: Format) -> None:
    """Print a result: the table for a terminal, the rest for programs.

    The table shows data through ``safe_text`` (no markup, ``ESC`` as ``\\x1b``).
    json and ndjson keep the data exactly (JSON escapes C0 controls itself);
    so do csv and tsv, which are for files and pipes: the ``csv`` module
    quotes delimiters, quotes and newlines, and other bytes pass unchanged.
    """
    if fmt is Format.table:
        console.print(_table(names, rows))
        console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}", style="dim")
    elif fmt is Format.json:
        docs = [dict(zip(names, map(_plain, r), strict=True)) for r in rows]
        sys.stdout.write(orjson.dumps(docs, default=str).decode() + "\n")
    elif fmt is Format.ndjson:
        for r in rows:
            doc = dict(zip(names, map(_plain, r), strict=True))
            sys.stdout.write(orjson.dumps(doc, default=str).decode() + "\n")
    else:
        writer = csv.writer(sys.stdout, delimiter="," if fmt is Format.csv else "\t")
        writer.writerow(names)
        writer.writerows([[_plain(v) for v in r] for r in rows])


def register(app: typer.Typer) -> None:
    @app.command("sql")
    def sql_cmd(
        ctx: typer.Context,
        query: Annotated[str, typer.Argument(help="SQL to run; '-' reads it from stdin")],
        fmt: Annotated[Format, typer.Option("--format", "-f", help="output format")] = Format.table,
        readonly: Annotated[
            bool, typer.Option("--readonly/--write", help="refuse writes and DDL (the default)")
        ] = True,
    ) -> None:
        """Run one query against the configured ClickHouse and print the result.

        Read-only unless --write. While another process (`telemetry run`, the sink)
        owns the embedded data directory, the query goes to it over its local
        socket, always read-only.
        """
        if query == "-":
            query = sys.stdin.read()
        if not query.strip():
            fail("empty query", 2)
        ch = open_reader(settings_from(ctx), readonly=readonly)
        names, rows = ch.query_table(query)
        print_result(names, rows, fmt)
