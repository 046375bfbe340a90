"""A local control socket, so other shells can read while another process owns chDB.

chDB admits one process per data directory. The process that owns it
(`telemetry run`, or the sink with ClickHouse embedded) listens on
``DATA_DIR/control.sock`` (a Unix socket, owner-only permissions) and answers
read-only queries; `telemetry stats`, `sql` and `export` route to it when they
find the directory owned (and `telemetry migrate` checks through it). Queries
run on the read-only client (``processors.clickhouse.connect(readonly=True)``):
a ``readonly=1`` session bounded in time, memory and result rows, each query
checked on the engine's own parse by ``processors.sql_guard`` (docs/security.md
says what is allowed).
A client that goes away takes its query with it: the query is killed.

Protocol: one JSON object per line each way.
``{"op": "query", "sql": ..., "params": {...}}`` ->
``{"columns": [...], "rows": [[...], ...]}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from processors.clickhouse import ClickHouse, connect
from processors.store import open_store, read_limits
from schemas.errors import OperationalError, TelemetryError
from schemas.settings import Settings
from telemetry.service.serial import SerialStore

__all__ = [
    "READERS",
    "ControlClient",
    "kill_control_queries",
    "open_reader",
    "serve_control",
    "serve_store",
    "socket_path",
]

log = logging.getLogger(__name__)

_MAX_REQUEST = 1 << 20
#: Read-only handles behind the socket: this many reads run at once.
READERS = 4
#: How often an orphaned query is killed again until it has ended.
_KILL_EVERY_S = 0.25
#: The longest a stopping process waits, in all, for its socket's reads to end
#: (so that it ends within 10 s of SIGTERM with time to spare).
_STOP_READS_S = 3.0


def socket_path(data_dir: Path) -> Path:
    return data_dir / "control.sock"


class _Gone(Exception):
    """The client left before its query started."""


def _query(
    ch: ClickHouse, sql: str, params: dict[str, Any] | None, gone: threading.Event
) -> dict[str, Any]:
    if gone.is_set():  # it waited for a free handle and its client left meanwhile
        raise _Gone
    names, types, rows = ch.query_typed(sql, params)
    return {"columns": names, "types": types, "rows": rows}


_TAG = "/* control "


def _kill(ch: ClickHouse, tag: str) -> None:
    """Stop the query carrying ``tag`` (on the writer: a reader may not KILL)."""
    ch.command(
        "KILL QUERY WHERE startsWith(query, concat({p:String}, {t:String})) ASYNC",
        {"p": _TAG, "t": tag},
    )


def kill_control_queries(ch: ClickHouse) -> None:
    """Stop every query the control socket started (the owner is stopping)."""
    ch.command("KILL QUERY WHERE startsWith(query, {p:String}) ASYNC", {"p": _TAG})


async def _answer(
    store: SerialStore, sql: str, params: dict[str, Any] | None, reader: asyncio.StreamReader
) -> dict[str, Any] | None:
    """The query's answer, or None when its client hung up first (the query is killed).

    A leading comment tags the query so that the KILL finds it in
    ``system.processes`` (and only it: the tag is random). A query still
    waiting for a free handle sees ``gone`` and does not start; one between
    its check and its start is caught by the next KILL: they repeat until the
    query has ended.
    """
    tag = secrets.token_hex(12)
    left = threading.Event()
    query = asyncio.ensure_future(
        store.run(_query, f"{_TAG}{tag} */ {sql}", params, left, read=True)
    )
    gone = asyncio.ensure_future(reader.read(1))
    try:
        while True:
            await asyncio.wait({query, gone}, return_when=asyncio.FIRST_COMPLETED)
            if query.done():
                return query.result()
            if gone.result() == b"":  # EOF: the client closed its end
                break
            gone = asyncio.ensure_future(reader.read(1))  # stray bytes: keep watching
    finally:
        gone.cancel()
    log.info("control: client went away; killing its query")
    left.set()
    while not query.done():
        with contextlib.suppress(TelemetryError):
            await store.run(_kill, tag)
        await asyncio.wait({query}, timeout=_KILL_EVERY_S)
    with contextlib.suppress(Exception):  # its answer has no one to go to
        query.result()
    return None


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
        with contextlib.suppress(asyncio.CancelledError):  # the service is stopping
            await _handle(reader, writer)

    async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await reader.readline()  # ValueError past _MAX_REQUEST bytes
                req = orjson.loads(line)
                if not isinstance(req, dict) or req.get("op") != "query":
                    raise ValueError('expected {"op": "query", "sql": ...}')
                params = req.get("params")
                if params is not None and not isinstance(params, dict):
                    raise ValueError("params must be an object")
                answer = await _answer(store, str(req["sql"]), params, reader)
            except TelemetryError as exc:
                answer = {"error": str(exc)}
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"error": f"bad request: {exc}"}
            if answer is None:
                return
            writer.write(orjson.dumps(answer, default=_default) + b"\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path), limit=_MAX_REQUEST)
    os.chmod(path, 0o600)
    return server


@contextlib.asynccontextmanager
async def serve_store(settings: Settings, writer: ClickHouse) -> AsyncIterator[SerialStore]:
    """Share the store this process owns: the writer, read handles, and the control socket.

    Any process that owns the embedded store (`telemetry run`, the sink)
    serves it, so `telemetry stats` and `sql` work from other shells while it
    runs. On leaving, every read the socket started is killed (waited for up
    to ``_STOP_READS_S``), and reads still waiting for a handle never start.
    """
    limits = read_limits(settings)
    readers = [
        connect(settings.clickhouse_dsn, readonly=True, limits=limits) for _ in range(READERS)
    ]
    store = SerialStore(writer, readers)
    path = socket_path(settings.data_dir)
    server = await serve_control(store, path)
    try:
        yield store
    finally:
        server.close()
        store.close()  # from now on no read starts; queued ones are cancelled
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_READS_S
        # Kill until none runs: a read that was between its check and its start
        # when one KILL ran is caught by the next.
        while store.reads_running and loop.time() < deadline:
            with contextlib.suppress(TelemetryError, TimeoutError):
                left = max(0.1, deadline - loop.time())
                await asyncio.wait_for(store.run(kill_control_queries), left)
            await asyncio.sleep(_KILL_EVERY_S)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

        def close_readers() -> None:
            for reader in readers:
                reader.close()

        # Off the loop: a handle's close waits for its lock. Both waits share one budget.
        with contextlib.suppress(TimeoutError):
            left = max(0.1, deadline - loop.time())
            await asyncio.wait_for(asyncio.to_thread(close_readers), left)


class ControlClient:
    """Reads through the running process; the same read methods as ``ClickHouse``."""

    is_embedded = True

    def __init__(self, path: Path, *, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout

    @property
    def owner(self) -> str:
        """Who answers, for messages: "the running process (pid N)" when its pid is known."""
        try:
            pid = int((self.path.parent / "owner.pid").read_text().strip())
        except (OSError, ValueError):
            return "the running process"
        return f"the running process (pid {pid})"

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
                f"the process that owns the store did not answer on {self.path}: "
                f"{exc.strerror or exc}"
            ) from None
        if not chunks:
            raise OperationalError(
                f"the process serving {self.path} stopped before answering; run it again"
            )
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

    def close(self) -> None:
        """Nothing to release: every query is its own connection."""

    def query_dicts(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        names, rows = self.query_table(sql, parameters)
        return [dict(zip(names, r, strict=True)) for r in rows]


def open_reader(settings: Settings, *, readonly: bool = False) -> ClickHouse | ControlClient:
    """The store if this process can open it, else the running process that owns it.

    Through the running process, queries are always read-only.
    """
    try:
        return open_store(settings, readonly=readonly)
    except OperationalError:
        sock = socket_path(settings.data_dir)
        if settings.clickhouse is None and sock.exists():
            return ControlClient(sock)
        raise
