"""A local control socket, so other shells can read while `telemetry run` owns chDB.

chDB admits one process per data directory. The running process listens on
``DATA_DIR/control.sock`` (a Unix socket, owner-only permissions) and answers
read-only queries; `telemetry stats` and `telemetry sql` route to it when they
find the directory owned. Writes are refused by ClickHouse itself
(a ``readonly`` session), not by parsing SQL.

Protocol: one JSON object per line each way.
``{"op": "query", "sql": ..., "params": {...}}`` ->
``{"columns": [...], "rows": [[...], ...]}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from processors.clickhouse import ClickHouse
from processors.store import open_store
from schemas.errors import OperationalError, TelemetryError
from schemas.settings import Settings
from telemetry.embedded.serial import SerialStore

__all__ = ["ControlClient", "open_reader", "serve_control", "socket_path"]

_MAX_REQUEST = 1 << 20


def socket_path(data_dir: Path) -> Path:
    return data_dir / "control.sock"


def _query(ch: ClickHouse, sql: str, params: dict[str, Any] | None) -> dict[str, Any]:
    names, types, rows = ch.query_typed(sql, params)
    return {"columns": names, "types": types, "rows": rows}


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()  # chDB returns UTC times without a zone
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


async def serve_control(store: SerialStore, path: Path) -> asyncio.AbstractServer:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                req = orjson.loads(line[:_MAX_REQUEST])
                if req.get("op") != "query":
                    raise ValueError(f"unknown op {req.get('op')!r}")
                answer = await store.run(_query, str(req["sql"]), req.get("params"), read=True)
            except TelemetryError as exc:
                answer = {"error": str(exc)}
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"error": f"bad request: {exc}"}
            writer.write(orjson.dumps(answer, default=_default) + b"\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path), limit=_MAX_REQUEST)
    os.chmod(path, 0o600)
    return server


class ControlClient:
    """Reads through the running process; the same read methods as ``ClickHouse``."""

    is_embedded = True

    def __init__(self, path: Path, *, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout

    def query_table(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        req = orjson.dumps({"op": "query", "sql": sql, "params": parameters}) + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(req)
                chunks = []
                while chunk := sock.recv(1 << 16):
                    chunks.append(chunk)
        except OSError as exc:
            raise OperationalError(
                f"the running `telemetry run` did not answer on {self.path}: {exc.strerror or exc}"
            ) from None
        answer = orjson.loads(b"".join(chunks))
        if "error" in answer:
            raise OperationalError(answer["error"])
        times = [i for i, t in enumerate(answer["types"]) if t.startswith(("DateTime", "Date"))]
        rows = []
        for raw in answer["rows"]:
            for i in times:
                if isinstance(raw[i], str):
                    raw[i] = datetime.fromisoformat(raw[i])
            rows.append(tuple(raw))
        return answer["columns"], rows

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.query_table(sql, parameters)[1]

    def query_dicts(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        names, rows = self.query_table(sql, parameters)
        return [dict(zip(names, r, strict=True)) for r in rows]


def open_reader(settings: Settings, *, readonly: bool = False) -> ClickHouse | ControlClient:
    """The store if this process can open it, else the running `telemetry run` that owns it.

    Through the running process, queries are always read-only.
    """
    try:
        return open_store(settings, readonly=readonly)
    except OperationalError:
        sock = socket_path(settings.data_dir)
        if settings.clickhouse is None and sock.exists():
            return ControlClient(sock)
        raise
