"""The `telemetry` command in embedded mode, as a user runs it: separate processes, one data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from pipeline_util import expected_counts, synthetic_events, with_duplicates

pytestmark = pytest.mark.integration


def run(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        timeout=300,
        input=stdin.decode() if stdin else None,
        text=True,
    )


def test_migrate_then_show_tables(tmp_path: Path) -> None:
    out = run(["migrate"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "0001_init" in out.stdout
    again = run(["migrate"], tmp_path)
    assert "up to date" in again.stdout
    tables = run(["sql", "SHOW TABLES FROM telemetry", "--format", "csv"], tmp_path)
    assert tables.returncode == 0, tables.stderr
    names = set(tables.stdout.split())
    assert {"requests", "model_stats_7d", "model_stats_hourly"} <= names


def test_ingest_then_stats_in_another_process(tmp_path: Path) -> None:
    unique = synthetic_events(5_000, seed=3)
    docs = with_duplicates(unique, 0.1, seed=4)
    lines = [orjson.dumps(d) for d in docs]
    bad = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({**unique[0], "event_id": "not-a-uuid"}),
        orjson.dumps({**unique[1], "ttft_ms": 10.0, "latency_ms": 5.0}),
        orjson.dumps({**unique[2], "status": "ok", "error_type": "timeout"}),
        b'{"x": "' + b"a" * 70_000 + b'"}',
    ]
    # Bad lines land between good ones: they must not hold the good ones back.
    for i, b in enumerate(bad):
        lines.insert(100 * (i + 1), b)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")

    out = run(["ingest", str(path)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"accepted {len(docs)}, rejected {len(bad)}" in out.stdout
    assert f"{len(unique)} new" in out.stdout
    assert "line 101: $: malformed JSON" in out.stderr
    assert "ttft_ms: must be <= latency_ms" in out.stderr
    assert "event_id:" in out.stderr and "error_type: must be null" in out.stderr

    # A second process sees what the first one did.
    stats = run(["stats", "--json"], tmp_path)
    assert stats.returncode == 0, stats.stderr
    rows = orjson.loads(stats.stdout)
    got = {
        (r["model"], r["provider"]): (r["requests"], r["errors"], r["traffic_tokens"]) for r in rows
    }
    exp = expected_counts(unique)
    assert got == {k: (exp.requests[k], exp.errors.get(k, 0), exp.tokens[k]) for k in exp.requests}
    assert all(r["as_of"].endswith("Z") for r in rows)

    rejected = run(["sql", "SELECT count() FROM telemetry.rejected", "-f", "csv"], tmp_path)
    assert rejected.stdout.split()[-1] == str(len(bad))

    # The same file again: nothing new, nothing double counted.
    again = run(["ingest", str(path)], tmp_path)
    assert "0 new" in again.stdout
    rows2 = orjson.loads(run(["stats", "--json"], tmp_path).stdout)
    assert {(r["model"], r["provider"]): r["requests"] for r in rows2} == {
        k: v[0] for k, v in got.items()
    }


def test_ingest_from_stdin_and_model_filter(tmp_path: Path) -> None:
    docs = synthetic_events(200, seed=5)
    body = b"\n".join(orjson.dumps(d) for d in docs)
    out = run(["ingest", "-"], tmp_path, stdin=body)
    assert out.returncode == 0, out.stderr
    model = docs[0]["model"]
    rows = orjson.loads(run(["stats", "--model", model, "--json"], tmp_path).stdout)
    assert rows and {r["model"] for r in rows} == {model}
    table = run(["stats"], tmp_path)
    assert table.returncode == 0 and "rolling 7 days" in table.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["stats"], {"TELEMETRY_CLICKHOUSE": "mysql://x"}, "TELEMETRY_CLICKHOUSE"),
        (["stats"], {"TELEMETRY_CLICKHOUSE": "http://127.0.0.1:1"}, "cannot reach ClickHouse"),
        (["ingest", "missing.ndjson"], {}, "no such file"),
        (["ingest", "-"], {"TELEMETRY_KAFKA": "127.0.0.1:1"}, "cannot reach Kafka at 127.0.0.1:1"),
        (["worker"], {}, "needs a broker"),
        (["sql", "SELEC 1"], {}, "Syntax error"),
        (["stats"], {"TELEMETRY_REQUESTS_TTL_DAYS": "x"}, "TELEMETRY_REQUESTS_TTL_DAYS"),
    ],
)
def test_expected_failures_are_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    out = run(args, tmp_path, env=env, stdin=b'{"a": 1}\n' if args[-1] == "-" else None)
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr


def test_second_process_is_told_who_owns_the_data_dir(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from schemas.settings import Settings; "
                "from processors.store import open_store; ch = open_store(Settings()); "
                "print('ready', flush=True); sys.stdin.read()"
            ),
        ],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"ready"
        out = run(["sql", "SELECT 1"], tmp_path)
        assert out.returncode != 0
        assert "in use by another process" in out.stderr and str(holder.pid) in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        holder.kill()
        holder.wait()
