"""Hostile SQL (issue 11, points 1, 10 and 11): read-only means read-only.

Run against the real engine: the guard decides on ClickHouse's own parse, so
a test with a hand-written tree would prove nothing about what runs.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_util import synthetic_events, wait_for
from run_util import RunProcess, cli

from processors.clickhouse import ClickHouse, QueryError, ReadLimits, connect
from telemetry.service.control import ControlClient, socket_path

pytestmark = pytest.mark.integration

HEAVY = "SELECT count() FROM numbers(30000000000) WHERE sipHash64(number) % 7 = 3"


@pytest.fixture
def reader(clickhouse: Any) -> Iterator[ClickHouse]:
    ch = connect(clickhouse.dsn, readonly=True, limits=ReadLimits(timeout_s=2))
    yield ch
    ch.close()


REFUSED = [
    ("SELECT * FROM file('/etc/passwd', 'LineAsString') LIMIT 1", "file()"),
    ("SELECT file('/etc/passwd')", "file()"),
    ("SELECT FILE('/etc/passwd')", "FILE()"),
    ("INSERT INTO FUNCTION file('{out}', 'TSV') SELECT 1", "InsertQuery is not a read"),
    ("SELECT 1 INTO OUTFILE '{out}'", "INTO OUTFILE"),
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", "url()"),
    ("SELECT * FROM remote('127.0.0.1:9', system.one)", "remote()"),
    ("SELECT * FROM s3('http://127.0.0.1:9/b/x.csv')", "s3()"),
    ("SELECT * FROM executable('id', 'TSV', 'x String')", "executable()"),
    ("SELECT * FROM python(globals)", "python()"),
    ("SELECT * FROM merge('default', '.*')", "merge()"),
    ("DESCRIBE file('/etc/passwd')", "file()"),
    ("SELECT joinGet('t', 'x', 1)", "joinGet()"),
    ("SELECT dictGet('d', 'x', 1)", "dictGet()"),
    ("SELECT * FROM INFORMATION_SCHEMA.tables", "outside the telemetry and system"),
    ("SELECT * FROM default.t", "outside the telemetry and system"),
    ("SET max_result_rows = 1", "Set is not a read"),
    ("SELECT 1 SETTINGS max_execution_time = 0", "setting"),
    ("USE system", "UseQuery is not a read"),
    ("KILL QUERY WHERE 1", "KillQueryQuery is not a read"),
    ("DROP TABLE telemetry.requests", "DropQuery is not a read"),
    ("OPTIMIZE TABLE telemetry.requests FINAL", "OptimizeQuery is not a read"),
    ("SELECT 1; SELECT file('/etc/passwd')", "one statement at a time"),
    # Found in adversarial review: later statements ran during the check itself.
    (
        "SELECT 1; SELECT 'x' INTO OUTFILE '{out}' TRUNCATE FORMAT RawBLOB; SELECT 1 WHERE 0",
        "one statement at a time",
    ),
    ("SELECT 1; USE system; SELECT 1 WHERE 0", "one statement at a time"),
    ("SELECT 1; KILL QUERY WHERE 1 SYNC; SELECT 1 WHERE 0", "one statement at a time"),
    ("SELECT `a\nb` FROM telemetry.requests", "could not be checked"),
    ("EXPLAIN SELECT file('/etc/passwd')", "file()"),
    # Found in review: INTO OUTFILE on statements other than SELECT.
    ("SHOW TABLES INTO OUTFILE '{out}'", "INTO OUTFILE"),
    ("DESCRIBE telemetry.requests INTO OUTFILE '{out}'", "INTO OUTFILE"),
    ("SHOW CREATE TABLE telemetry.requests INTO OUTFILE '{out}'", "INTO OUTFILE"),
    ("EXISTS telemetry.requests INTO OUTFILE '{out}' TRUNCATE", "INTO OUTFILE"),
    ("SHOW PROCESSLIST INTO OUTFILE '{out}' APPEND", "INTO OUTFILE"),
    ("EXPLAIN SELECT 1 INTO OUTFILE '{out}'", "INTO OUTFILE"),
    # ... a table of another database on the right of IN ...
    ("SELECT 'x' IN default.secret", "outside the telemetry and system"),
    ("SELECT 1 WHERE 'x' GLOBAL NOT IN default.secret", "outside the telemetry and system"),
    ("SELECT nullIn('x', default.secret)", "outside the telemetry and system"),
    # ... and lines forged by an alias with a line break.
    ("SELECT 1 AS `a (children 1)\n  Identifier b`", "could not be checked"),
    ("SELECT 1 AS `a\n TableIdentifier default.t`", "could not be checked"),
]


@pytest.mark.parametrize(("sql", "named"), REFUSED)
def test_refused_with_a_reason_and_no_side_effect(
    reader: ClickHouse, tmp_path: Path, sql: str, named: str
) -> None:
    out = tmp_path / "written.txt"
    with pytest.raises(QueryError) as err:
        reader.query(sql.replace("{out}", str(out)))
    message = str(err.value)
    assert named.lower() in message.lower()
    assert "read-only" in message or "readonly" in message.lower()
    assert not out.exists()


ALLOWED = [
    ("SELECT count() FROM telemetry.requests", [(0,)]),
    ("SELECT count() FROM requests", [(0,)]),
    ("SELECT name FROM system.databases WHERE name = 'telemetry'", [("telemetry",)]),
    ("SELECT sum(number) FROM numbers(4)", [(6,)]),
    ("WITH t AS (SELECT 2 AS x) SELECT x FROM t", [(2,)]),
    ("SELECT x FROM values('x UInt8', 1, 2) ORDER BY x", [(1,), (2,)]),
    ("SELECT x FROM (SELECT 1 AS x UNION ALL SELECT 2) ORDER BY x", [(1,), (2,)]),
]


@pytest.mark.parametrize(("sql", "rows"), ALLOWED)
def test_reads_still_work(reader: ClickHouse, sql: str, rows: list[tuple[Any, ...]]) -> None:
    assert reader.query(sql) == rows


def test_show_describe_explain_and_parameters(reader: ClickHouse) -> None:
    assert ("requests",) in reader.query("SHOW TABLES FROM telemetry")
    assert reader.query("DESCRIBE telemetry.requests")[0][0] == "event_id"
    assert reader.query("EXPLAIN SELECT 1")
    assert reader.query("SELECT {m:String}", {"m": "x"}) == [("x",)]


def test_a_refused_set_leaves_the_session_as_it_was(reader: ClickHouse) -> None:
    with pytest.raises(QueryError):
        reader.query("SET max_result_rows = 1")
    assert len(reader.query("SELECT number FROM numbers(5)")) == 5


def test_a_heavy_read_is_stopped_by_the_time_bound(reader: ClickHouse) -> None:
    with pytest.raises(QueryError, match=r"(?i)timeout"):
        reader.query(HEAVY)


# -- through `telemetry run`'s control socket -------------------------------------------


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunProcess]:
    # A time bound far beyond the test's own waits: only the kill can end HEAVY in time.
    run = RunProcess(tmp_path, env={"TELEMETRY_SQL_TIMEOUT_S": "3000"})
    run.start()
    try:
        yield run
    finally:
        run.stop()


def _running_heavy(client: ControlClient) -> int:
    rows = client.query(
        "SELECT count() FROM system.processes WHERE query LIKE '%sipHash64(number)%' "
        "AND query NOT LIKE '%system.processes%'"
    )
    return int(rows[0][0])


def test_socket_refuses_files_and_keeps_sessions_apart(running: RunProcess) -> None:
    cwd = running.cwd
    leak = cli(cwd, "sql", "SELECT * FROM file('/etc/passwd', 'LineAsString') LIMIT 1")
    assert leak.returncode != 0 and "root:" not in leak.stdout
    assert "file()" in leak.stderr and "Traceback" not in leak.stderr
    shared = cli(cwd, "sql", "SET max_result_rows=1")
    assert shared.returncode != 0
    rows = cli(cwd, "sql", "SELECT number FROM numbers(3)", "-f", "csv")
    assert rows.returncode == 0 and rows.stdout.split() == ["number", "0", "1", "2"]
    assert cli(cwd, "stats").returncode == 0


def test_a_heavy_socket_query_does_not_block_ingest(running: RunProcess) -> None:
    client = ControlClient(socket_path(running.cwd / ".telemetry"), timeout=600)
    failure: list[BaseException] = []

    def heavy() -> None:
        try:
            client.query(HEAVY)
        except BaseException as exc:  # the run's own stop ends it
            failure.append(exc)

    thread = threading.Thread(target=heavy, daemon=True)
    thread.start()
    wait_for(lambda: _running_heavy(client), timeout=60, what="the heavy query to run")
    docs = synthetic_events(200, seed=7)
    answer = running.post(docs)
    assert answer["accepted"] == 200
    # The POST was answered while the heavy read was still running.
    assert thread.is_alive() and _running_heavy(client) == 1
    running.stop()  # SIGTERM ends the service although a read is still running
    assert running.proc is not None and running.proc.returncode == 0


def test_a_socket_query_dies_with_its_client(running: RunProcess) -> None:
    path = socket_path(running.cwd / ".telemetry")
    client = ControlClient(path, timeout=60)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.sendall(orjson.dumps({"op": "query", "sql": HEAVY}) + b"\n")
    wait_for(lambda: _running_heavy(client), timeout=60, what="the heavy query to run")
    sock.close()  # the client goes away (Ctrl-C on `telemetry sql`)
    wait_for(
        lambda: _running_heavy(client) == 0, timeout=60, what="the orphaned query to be killed"
    )


@pytest.mark.parametrize(
    ("request_line", "said"),
    [
        (b"[1, 2]\n", "bad request"),
        (b'{"op": "drop"}\n', "bad request"),
        (b'{"op": "query", "sql": "SELECT 1", "params": [1]}\n', "params must be an object"),
        (b'{"op": "query"}\n', "bad request"),
    ],
)
def test_bad_socket_requests_get_an_answer(
    running: RunProcess, request_line: bytes, said: str
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(socket_path(running.cwd / ".telemetry")))
        sock.sendall(request_line)
        answer = b""
        while chunk := sock.recv(1 << 16):
            answer += chunk
    assert said in orjson.loads(answer)["error"]
    assert cli(running.cwd, "sql", "SELECT 1", "-f", "csv").returncode == 0


def test_an_oversized_socket_request_is_cut_off(running: RunProcess) -> None:
    """The line limit (1 MiB) holds; the service answers the next client as before."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(socket_path(running.cwd / ".telemetry")))
        try:
            sock.sendall(b"x" * (4 << 20) + b"\n")
            answer = sock.recv(1 << 16)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""  # refused before we finished sending: as good as an answer
    assert answer == b"" or b"bad request" in answer
    assert cli(running.cwd, "sql", "SELECT 1", "-f", "csv").returncode == 0
    assert "Traceback" not in (running.cwd / "run.log").read_text()


def test_a_refused_use_leaves_the_database_as_it_was(reader: ClickHouse) -> None:
    with pytest.raises(QueryError):
        reader.query("SELECT 1; USE system; SELECT 1 WHERE 0")
    assert reader.query("SELECT currentDatabase()") == [("telemetry",)]
