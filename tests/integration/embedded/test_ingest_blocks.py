"""`telemetry ingest`'s block path on bad input, a kept refresher, and a SIGKILL mid-file.

Each bad line is rejected with its line number and exactly the reason the
per-event path gives it (``decode_event``), its valid neighbours are stored,
whichever block boundary or path (SQL shortcut or batch validator) they fall on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_util import expected_counts, make_event, synthetic_events
from run_util import cli, run_env

from processors.embedded import Refresher, ingest_lines
from schemas.codec import MAX_EVENT_BYTES, decode_event
from schemas.errors import InvalidEvent

pytestmark = pytest.mark.integration


def _reason(line: bytes) -> str:
    try:
        decode_event(line)
    except InvalidEvent as exc:
        return exc.reason
    raise AssertionError(f"{line[:80]!r} is valid")


def _requests(ch: Any) -> int:
    return int(ch.query("SELECT count() FROM telemetry.requests")[0][0])


def _rejected(ch: Any) -> list[tuple[str, str]]:
    return [
        (loc, reason)
        for loc, reason in ch.query(
            "SELECT location, reason FROM telemetry.rejected "
            "ORDER BY toUInt64(substring(location, 6))"
        )
    ]


@pytest.mark.parametrize("batch_size", [2, 3, 25_000])
def test_bad_lines_at_block_boundaries_and_of_every_form(clickhouse: Any, batch_size: int) -> None:
    good = [orjson.dumps(make_event(model=f"m/{i}")) for i in range(8)]
    bad = {
        "huge": b'{"model": "' + b"x" * (3 * MAX_EVENT_BYTES) + b'"}',
        "invalid utf-8": orjson.dumps(make_event())[:-2] + b'\xff"}',
        "bom": b"\xef\xbb\xbf" + orjson.dumps(make_event()),
        "array": b"[" + b",".join(good[:2]) + b"]",
        "truncated": good[0][:40],
    }
    lines = [
        good[0],
        good[1],
        bad["huge"],  # the third line: the end of a block of 2 or 3
        bad["invalid utf-8"],  # the first line of the next block
        good[2] + b"\r",  # CRLF line ends: valid
        b"",  # an empty line: skipped, but counted
        bad["bom"],
        good[3] + b"\r",
        b"   \r",  # a blank line with a CR
        bad["array"],
        good[4],
        bad["truncated"],
        good[5],
    ]
    data = b"\n".join(lines) + b"\r\n"
    # cut in small chunks: lines (the huge one above all) span chunks
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    report = ingest_lines(
        clickhouse, chunks, source="ingest:t", batch_size=batch_size, do_refresh=False
    )

    assert (report.accepted, report.stored, report.rejected) == (6, 6, 5)
    assert _requests(clickhouse) == 6
    cut = bad["huge"][: MAX_EVENT_BYTES + 1]
    want = [
        ("line 3", _reason(cut)),
        ("line 4", _reason(bad["invalid utf-8"])),
        ("line 7", _reason(bad["bom"])),
        ("line 10", _reason(bad["array"])),
        ("line 12", _reason(bad["truncated"])),
    ]
    assert _rejected(clickhouse) == want
    assert (
        want[0][1]
        == f"$: event is {MAX_EVENT_BYTES + 1} bytes, over the {MAX_EVENT_BYTES} byte limit"
    )
    assert want[3][1] == "$: must be a JSON object, got list"
    assert report.rejected_samples == [(int(loc[5:]), reason) for loc, reason in want]


def test_a_file_that_is_one_json_array_is_rejected_with_a_hint(tmp_path: Path) -> None:
    docs = synthetic_events(300, seed=8)
    path = tmp_path / "events.json"
    path.write_bytes(orjson.dumps(docs))  # one line, far over the event size limit
    out = cli(tmp_path, "ingest", str(path))
    assert out.returncode == 0, out.stderr
    assert "accepted 0, rejected 1" in out.stdout
    assert "line 1: $: event is 65537 bytes" in out.stderr
    assert "one JSON array" in out.stderr and "one event object per line" in out.stderr


def test_a_kept_refresher_does_not_read_the_buckets_again(clickhouse: Any) -> None:
    first = [orjson.dumps(make_event(model="m/kept")) for _ in range(5)]
    ingest_lines(clickhouse, [b"\n".join(first)], source="t", do_refresh=False)
    refresher = Refresher()
    refresher.refresh(clickhouse)
    # Buckets held in memory: emptying the stored ones must not lose the first five.
    clickhouse.command("TRUNCATE TABLE telemetry.stat_buckets")
    more = [orjson.dumps(make_event(model="m/kept")) for _ in range(3)]
    ingest_lines(clickhouse, [b"\n".join(more)], source="t", do_refresh=False)
    refresher.refresh(clickhouse)
    rows = clickhouse.query(
        "SELECT requests FROM telemetry.model_stats_7d WHERE model = 'm/kept' AND provider = ''"
    )
    assert rows == [(8,)]
    assert refresher.loads == 1


_KILLED = """
import os, signal, sys
from processors.embedded import ingest_lines
from processors.store import open_store
from schemas.settings import Settings

ch = open_store(Settings(data_dir=sys.argv[1]))
data = open(sys.argv[2], "rb").read()

def chunks():
    step = len(data) // 10
    for k, i in enumerate(range(0, len(data), step)):
        if k == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-file, blocks stored before it
        yield data[i : i + step]

ingest_lines(ch, chunks(), source="ingest:killed", batch_size=500)
"""


@pytest.mark.parametrize("kill_at", [3, 8])
def test_sigkill_mid_file_then_the_same_file_again_counts_each_event_once(
    tmp_path: Path, kill_at: int
) -> None:
    unique = synthetic_events(4_000, seed=21)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in unique + unique[:300]) + b"\n")
    data_dir = tmp_path / ".telemetry"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED, str(data_dir), str(path), str(kill_at)],
        env=run_env(),
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = cli(tmp_path, "ingest", str(path))
    assert again.returncode == 0, again.stderr
    stats = cli(tmp_path, "stats", "--json")
    got = {(r["model"], r["provider"]): r["requests"] for r in orjson.loads(stats.stdout)}
    assert got == expected_counts(unique).requests
    stored = cli(tmp_path, "sql", "SELECT count() FROM telemetry.requests", "-f", "csv")
    assert stored.stdout.split()[-1] == str(len(unique))
