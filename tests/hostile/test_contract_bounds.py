"""Hostile numbers and times (issue 11, points 2, 5, 6 and 12).

Every event the contract accepts must be one the stats can hold and the store
keeps: no value may stop the refresh, fail a batch, or be answered
"accepted" and then dropped; an id counts once whatever its ``ts``.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_util import make_event, wait_for
from run_util import RunProcess, cli, run_env

from processors.aggregate import HourBucket
from processors.sinks.requests import write_events
from schemas.codec import validate_event
from schemas.errors import InvalidEvent
from schemas.event import MAX_DURATION_MS, MAX_TOKENS

NOW = datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("ttft", "latency"), [(0, 1e-322), (0, 1e-320), (0, 5e-324), (1e-320, 2e-320)]
)
def test_tiny_durations_validate_and_fold(ttft: float, latency: float) -> None:
    """Point 2: these once raised ZeroDivisionError/OverflowError in the refresh."""
    event = validate_event(make_event(ttft_ms=ttft, latency_ms=latency, output_tokens=2))
    assert event.latency_ms == 0.0 and event.ttft_ms == 0.0  # kept to the microsecond
    bucket = HourBucket()
    bucket.add(event)
    assert bucket.requests == 1 and bucket.output_tps.count == 0
    HourBucket.from_bytes(bucket.to_bytes())


def test_a_microsecond_of_generation_gives_a_finite_speed() -> None:
    event = validate_event(
        make_event(ttft_ms=0, latency_ms=0.001, output_tokens=MAX_TOKENS, input_tokens=0)
    )
    bucket = HourBucket()
    bucket.add(event)
    speed = bucket.figures().output_tps_p50
    assert bucket.output_tps.count == 1 and speed is not None and speed > 1e12


def test_rows_stored_before_the_bounds_do_not_stop_the_fold() -> None:
    bucket = HourBucket()
    bucket.add_values("ok", None, 0.0, 1e-320, 1, 2)  # raw row values, never validated
    bucket.add_values("ok", None, 0.0, 1e-322, 1, 2)
    assert bucket.requests == 2 and bucket.output_tps.count == 0


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("input_tokens", 2**64 - 1, f"less than or equal to {MAX_TOKENS}"),
        ("output_tokens", MAX_TOKENS + 1, f"less than or equal to {MAX_TOKENS}"),
        ("cached_input_tokens", 2**63, f"less than or equal to {MAX_TOKENS}"),
        ("latency_ms", MAX_DURATION_MS + 1, f"less than or equal to {MAX_DURATION_MS}"),
        ("ttft_ms", 1e300, f"less than or equal to {MAX_DURATION_MS}"),
        ("ts", "1000-01-01T00:00:00Z", "more than 30 days in the past"),
        ("ts", "0001-01-01T00:00:00Z", "more than 30 days in the past"),
        ("ts", _iso(NOW - timedelta(days=30, minutes=1)), "more than 30 days in the past"),
    ],
)
def test_out_of_range_values_are_rejected_by_name(field: str, value: Any, rule: str) -> None:
    """Points 2, 5 and 12: the contract bounds what the stats and the store can hold."""
    doc = make_event(**{field: value})
    if field == "latency_ms":
        doc["ttft_ms"] = None
    with pytest.raises(InvalidEvent) as err:
        validate_event(doc)
    assert err.value.field == field and rule in err.value.rule


def test_the_edges_of_the_ranges_are_valid() -> None:
    validate_event(make_event(ts=_iso(NOW - timedelta(days=29, hours=23))))
    validate_event(make_event(input_tokens=MAX_TOKENS, cached_input_tokens=MAX_TOKENS))
    validate_event(make_event(ttft_ms=None, latency_ms=MAX_DURATION_MS))


@pytest.mark.integration
def test_an_id_counts_once_whatever_its_ts(clickhouse: Any) -> None:
    """Point 6: the same event_id sent at -3 h and again at -1 h is stored once."""
    first = make_event(ts=_iso(NOW - timedelta(hours=3)))
    again = {**first, "ts": _iso(NOW - timedelta(hours=1))}
    assert write_events(clickhouse, [validate_event(first)]) == 1
    assert write_events(clickhouse, [validate_event(again)]) == 0
    rows = clickhouse.query(
        "SELECT count() FROM telemetry.requests WHERE event_id = {id:UUID}",
        {"id": first["event_id"]},
    )
    assert rows == [(1,)]


@pytest.mark.integration
def test_a_month_of_days_in_one_batch_is_stored(clickhouse: Any) -> None:
    """Point 5: a batch over every day the contract allows is one insert, not a 500."""
    events = [validate_event(make_event(ts=_iso(NOW - timedelta(days=d)))) for d in range(30)]
    events.append(validate_event(make_event(ts=_iso(NOW - timedelta(days=29, hours=23)))))
    assert write_events(clickhouse, events) == len(events)


# -- through `telemetry run` ------------------------------------------------------------


def _post(url: str, docs: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    body = b"\n".join(orjson.dumps(d) for d in docs)
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-ndjson"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url.replace("/v1/events", "/readyz"), timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def _stats(cwd: Path) -> dict[str, int]:
    out = cli(cwd, "stats", "--json")
    rows = orjson.loads(out.stdout) if out.returncode == 0 else []
    return {r["model"]: r["requests"] for r in rows if not r.get("provider")}


@pytest.mark.integration
def test_hostile_values_never_stop_the_stats_or_the_batch(tmp_path: Path) -> None:
    """Points 2, 5, 12 end to end: a 500 never answers input, stats keep flowing."""
    run = RunProcess(tmp_path)
    run.start()
    try:
        hostile = [
            make_event(model="m/tiny", ttft_ms=0, latency_ms=1e-322),
            make_event(model="m/tiny", ttft_ms=0, latency_ms=1e-320),
            make_event(model="m/huge", input_tokens=2**64 - 1),
            make_event(model="m/huge", input_tokens=2**64 - 1),
            make_event(model="m/old", ts="1000-01-01T00:00:00Z"),
            make_event(model="m/old", ts=_iso(NOW - timedelta(days=45))),
        ]
        # One event a day over 150 days: over ClickHouse's 100 partitions per insert.
        spread = [
            make_event(model="m/spread", ts=_iso(NOW - timedelta(days=d))) for d in range(150)
        ]
        status, answer = _post(run.url, hostile + spread)
        assert status == 200
        within = sum(1 for d in range(150) if d <= 29)
        assert answer["accepted"] == 2 + within
        reasons = {r["reason"] for r in answer["rejected"]}
        assert any("input_tokens" in r for r in reasons)
        assert any("30 days in the past" in r for r in reasons)
        assert answer["rejected_count"] == 4 + (150 - within)

        status, answer = _post(run.url, [make_event(model="m/after")])
        assert status == 200 and answer["accepted"] == 1
        want = {"m/tiny": 2, "m/after": 1}  # (m/spread: only its last 7 days count)

        def published() -> bool:
            stats = _stats(tmp_path)
            return {m: stats.get(m) for m in want} == want and "m/spread" in stats

        wait_for(published, timeout=60, what=f"stats {want}")
        assert _readyz(run.url)[0] == 200
        out = cli(tmp_path, "sql", "SELECT count() FROM telemetry.requests", "-f", "csv")
        assert out.stdout.split()[-1] == str(3 + within)  # accepted means stored
    finally:
        run.stop()


_POISON = """
import sys, uuid
from datetime import UTC, datetime
from processors.store import open_store
from processors.sinks.requests import REQUEST_COLUMNS
from schemas.settings import Settings
ch = open_store(Settings(data_dir=sys.argv[1]))
now = datetime.now(UTC)
row = lambda: (uuid.uuid4(), 1, now, "g", None, "m/poison", "p", True, "ok", None, 200,
               1.0, 10.0, 2**64 - 1, 2, 0)
ch.insert("telemetry.requests", [row(), row()], REQUEST_COLUMNS)
"""


@pytest.mark.integration
def test_a_failing_refresh_is_logged_retried_and_shown_by_readyz(tmp_path: Path) -> None:
    """Point 2: rows stored before the bounds overflow a bucket; the service says so."""
    data_dir = tmp_path / ".telemetry"
    subprocess.run(
        [sys.executable, "-c", _POISON, str(data_dir)], env=run_env(), check=True, timeout=120
    )
    run = RunProcess(tmp_path)
    run.start()
    try:

        def failing_twice() -> dict[str, Any] | None:
            status, doc = _readyz(run.url)
            return doc if status == 503 and "(2 attempts)" in doc.get("reason", "") else None

        doc = wait_for(failing_twice, timeout=60, what="/readyz to report a failing refresh")
        assert "stats refresh failing since" in doc["reason"]
        status, answer = _post(run.url, [make_event(model="m/fine")])
        assert status == 200 and answer["accepted"] == 1  # ingest keeps working
    finally:
        run.stop()
    log = (tmp_path / "run.log").read_text()
    assert "refresh failed" in log and "Traceback" in log  # an unexpected failure, logged whole
