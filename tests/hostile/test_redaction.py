"""Rejected input keeps no prompt text, and the embedded data directory is private.

Point 7 of the attacker's probe of `telemetry run`: a rejected line with a
``prompt`` field was kept byte for byte in ``telemetry.rejected`` and on the
dead-letter topic, and the data directory was readable by every local user.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_util import make_event
from run_util import cli_bytes

from collector.encoding import dead_letter_value
from collector.handoff import Rejected as HttpRejected
from processors.kafka_io import dlq_record
from processors.sinks.kafka_sink import _from_dlq
from processors.sinks.rejected import Rejected, write_rejected
from schemas.redact import CONTRACT_FIELDS, MAX_PREFIX_BYTES, MAX_STRING_CHARS, redact_rejected

SECRET = "SECRET-PROMPT-do-not-keep"


def _with_prompt(**overrides: Any) -> bytes:
    """A line an emitter got wrong (bad ttft_ms) that also carries prompt text."""
    doc = make_event(ttft_ms=9000.0, latency_ms=10.0, **overrides)
    doc["prompt"] = SECRET
    doc["messages"] = [{"role": "user", "content": SECRET}]
    doc[SECRET] = 1  # a key can be text too
    return orjson.dumps(doc)


HOSTILE_INPUTS: list[bytes] = [
    _with_prompt(),
    _with_prompt(region={"note": SECRET}, provider=[SECRET]),  # text nested in contract fields
    orjson.dumps([{"prompt": SECRET}]),
    orjson.dumps("x" * 300 + SECRET),
    b"{not json " + b"a" * 300 + SECRET.encode(),
    b'{"prompt": "' + b"a" * 300 + SECRET.encode() + b'"',  # a JSON line cut short
    b"\xff\xfe" + b"b" * 300 + SECRET.encode(),
]


def _no_secret(data: bytes | str, *, keys: bool = False) -> None:
    """No prompt text; with ``keys``, not even the unknown fields' names."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    assert SECRET not in text
    if keys:
        assert "prompt" not in text and "messages" not in text


# --- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", HOSTILE_INPUTS)
def test_redacted_form_keeps_no_prompt_and_is_stable(raw: bytes) -> None:
    kept = redact_rejected(raw)
    _no_secret(kept)
    assert redact_rejected(kept) == kept  # what the sink reads back from the DLQ stays as is
    assert len(kept) <= 16 * 1024


def test_object_keeps_contract_fields_with_their_values() -> None:
    raw = _with_prompt(region={"a": 1}, provider=["p"], model="m" * 300)
    kept = orjson.loads(redact_rejected(raw))
    assert set(kept) <= CONTRACT_FIELDS
    assert kept["ttft_ms"] == 9000.0 and kept["latency_ms"] == 10.0  # why it was rejected
    assert kept["region"] == "<object>" and kept["provider"] == "<array>"
    assert kept["model"] == "m" * MAX_STRING_CHARS + "…"
    assert list(kept)[:3] == ["event_id", "schema_version", "ts"]  # the input's order


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"[1, 2]", b'"<array>"'),
        (b"12.5", b"12.5"),
        (b"null", b"null"),
        (b"true", b"true"),
        (b'"short"', b'"short"'),
        (b"{not json", b"{not json"),
        (b"x" * 300, b"x" * MAX_PREFIX_BYTES + "…".encode()),
        ("é".encode() * 200, "é".encode() * (MAX_PREFIX_BYTES // 2) + "…".encode()),
    ],
)
def test_non_objects_are_bounded(raw: bytes, kept: bytes) -> None:
    assert redact_rejected(raw) == kept


# --- every place that keeps rejected bytes ------------------------------------------------


def test_rejected_row_keeps_no_prompt() -> None:
    row = Rejected(
        "ingest:f", "line 3", "ttft_ms", "ttft_ms: must be <= latency_ms", _with_prompt()
    )
    _no_secret(row.row()[4], keys=True)
    assert row.row()[:4] == ("ingest:f", "line 3", "ttft_ms", "ttft_ms: must be <= latency_ms")
    assert orjson.loads(row.row()[4])["ttft_ms"] == 9000.0


def test_dead_letter_value_keeps_no_prompt() -> None:
    value = dead_letter_value(
        source="http", index=4, field="ttft_ms", reason="ttft_ms: bad", raw=_with_prompt()
    )
    _no_secret(value, keys=True)
    doc = orjson.loads(value)
    assert (doc["index"], doc["field"], doc["reason"]) == (4, "ttft_ms", "ttft_ms: bad")
    assert doc["raw_truncated"] is True
    assert orjson.loads(doc["raw"])["latency_ms"] == 10.0


def test_http_dead_letter_keeps_no_prompt() -> None:
    """The HTTP door's rejects go to Kafka through ``to_dlq``."""
    _no_secret(HttpRejected(2, "ttft_ms", "bad", _with_prompt(), "http").to_dlq(), keys=True)


def test_dlq_record_keeps_no_prompt() -> None:
    value = dlq_record(
        source="ingest:f", location="line 9", field="ttft_ms", reason="bad", raw=_with_prompt()
    )
    _no_secret(value, keys=True)
    assert orjson.loads(value)["location"] == "line 9"


def test_old_dead_letter_is_redacted_on_its_way_into_the_table() -> None:
    """A DLQ record written before the fix still carries the prompt: the sink drops it."""
    doc = {"source": "http", "index": 1, "field": "$", "reason": "r"}
    old = orjson.dumps({**doc, "raw": _with_prompt().decode()})
    _no_secret(_from_dlq(old, "kafka:dlq").row()[4], keys=True)
    unreadable = b"not json " + b"a" * MAX_PREFIX_BYTES + SECRET.encode()
    _no_secret(_from_dlq(unreadable, "kafka:dlq").row()[4])


# --- with the real engine ---------------------------------------------------------------


@pytest.mark.integration
def test_rejected_table_shows_no_prompt(clickhouse: Any) -> None:
    from processors.embedded.ingest import ingest_lines

    write_rejected(clickhouse, [Rejected("http", "index 0", "ttft_ms", "bad", _with_prompt())])
    lines = b"\n".join([*HOSTILE_INPUTS[1:], orjson.dumps(make_event())]) + b"\n"
    report = ingest_lines(clickhouse, [lines], source="ingest:t", do_refresh=False)
    assert report.rejected == len(HOSTILE_INPUTS) - 1 and report.accepted == 1
    rows = clickhouse.query("SELECT raw FROM telemetry.rejected")
    assert len(rows) == len(HOSTILE_INPUTS)
    for (raw,) in rows:
        _no_secret(raw)


def _cli(args: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return cli_bytes(cwd, *args, env={"TELEMETRY_DATA_DIR": str(cwd / "data")}, stdin=stdin)


def _loose(root: Path) -> list[str]:
    """Paths under ``root`` that a group or other user could read, write or enter."""
    return [
        f"{p} {stat.filemode(p.lstat().st_mode)}"
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & 0o077
    ]


@pytest.mark.integration
def test_cli_ingest_keeps_no_prompt_and_data_dir_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # as an older version left it
    (data / "owner.lock").write_bytes(b"")
    (data / "owner.lock").chmod(0o644)
    body = b"\n".join([*HOSTILE_INPUTS, orjson.dumps(make_event())]) + b"\n"
    out = _cli(["ingest", "-"], tmp_path, stdin=body)
    assert out.returncode == 0, out.stderr
    assert f"rejected {len(HOSTILE_INPUTS)}".encode() in out.stdout

    raw = _cli(["sql", "SELECT raw FROM telemetry.rejected", "-f", "ndjson"], tmp_path)
    assert raw.returncode == 0, raw.stderr
    assert len(raw.stdout.splitlines()) == len(HOSTILE_INPUTS)
    _no_secret(raw.stdout)

    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "owner.lock").stat().st_mode) == 0o600
    assert (data / "clickhouse").is_dir()
    assert _loose(data) == []


def test_claim_makes_the_data_dir_private(tmp_path: Path) -> None:
    """Without the engine: the directory 0700 (tightened), our files 0600, umask 0077."""
    data = tmp_path / "d"
    data.mkdir()
    data.chmod(0o755)
    script = (
        "import os, sys; from pathlib import Path; from processors.store import _claim; "
        "d = Path(sys.argv[1]); _claim(d); (d / 'later').write_text('x'); "
        "(d / 'sub').mkdir(); print(oct(os.umask(0)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(data)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0o77"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert modes == {"owner.lock": 0o600, "later": 0o600, "sub": 0o700}  # owner.pid: removed


def test_claim_creates_missing_data_dir_0700(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    script = (
        "import sys; from pathlib import Path; from processors.store import _claim; "
        "_claim(Path(sys.argv[1])); print(open(Path(sys.argv[1]) / 'owner.pid').read())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(data)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().isdigit()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
