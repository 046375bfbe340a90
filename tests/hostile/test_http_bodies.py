"""Hostile bodies at the HTTP door: what one request can cost is bounded.

Each test names the defect it holds fixed; none measures time. Where a test
could hang on a regression, a generous ``timeout`` mark ends it (a guard, not a
threshold).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import zstandard
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

import collector.http.app as app_module
import collector.http.body as body_module
import processors.embedded.ingest as ingest_module
from collector.handoff import MemoryHandoff
from collector.http.app import IngestLimits, create_app
from collector.http.body import MAX_ITEMS, MAX_REJECTS_KEPT, BodyError, decompress, parse_events
from processors.embedded.ingest import IngestReport
from telemetry.commands import ingest_cmd
from telemetry.context import console, err_console

NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def handoff() -> MemoryHandoff:
    return MemoryHandoff()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(
    handoff: MemoryHandoff, registry: CollectorRegistry
) -> AsyncIterator[TestClient[Any, Any]]:
    """The door with its default limits (no auth: the bodies are the subject here)."""
    app = create_app(handoff=handoff, auth=None, registry=registry, limits=IngestLimits())
    async with TestClient(TestServer(app)) as c:
        yield c


def ndjson(events: list[Any]) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events)


# --- 3: many gzip members, linear time -------------------------------------------------


class _CountingZlib:
    """Wraps ``zlib.decompressobj``: counts the input bytes handed to zlib."""

    def __init__(self) -> None:
        self.real = zlib.decompressobj
        self.fed = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        counter = self
        inner = self.real(*args, **kwargs)

        class Counted:
            def decompress(self, data: Any, *rest: Any) -> bytes:
                counter.fed += len(data)
                return inner.decompress(data, *rest)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Counted()


def _gzip_input_fed(monkeypatch: pytest.MonkeyPatch, members: int) -> int:
    counting = _CountingZlib()
    monkeypatch.setattr(body_module.zlib, "decompressobj", counting)
    try:
        assert decompress(gzip.compress(b"") * members, "gzip", 1 << 20) == b""
    finally:
        monkeypatch.setattr(body_module.zlib, "decompressobj", counting.real)
    return counting.fed


def test_gzip_members_cost_input_linear_in_their_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 3: bytes given to zlib grow linearly with the members, not with their square.

    Copying the rest of the body for each member (``d.unused_data``) gives zlib
    n²/2 member sizes in all: four times the members, sixteen times the input.
    """
    small = _gzip_input_fed(monkeypatch, 2_500)
    large = _gzip_input_fed(monkeypatch, 10_000)
    assert large <= 5 * small  # linear: 4x; quadratic: 16x
    assert large <= 64 * len(gzip.compress(b"") * 10_000)  # a constant per body byte


@pytest.mark.timeout(60)  # a hang guard: the reported body took over 120 s
async def test_reported_body_of_419000_empty_gzip_members_is_answered(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    """Defect 3: the 8.4 MB body from the report is decoded (to nothing) and answered."""
    body = gzip.compress(b"") * 419_000
    resp = await client.post(
        "/v1/events", data=body, headers={**NDJSON, "Content-Encoding": "gzip"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 0
    assert (await client.get("/healthz")).status == 200
    assert handoff.events == [] and handoff.rejected == []


def test_many_gzip_members_keep_the_size_bound_and_the_truncation_check() -> None:
    """Defect 3: the linear decoder still refuses bombs (413) and cut or corrupt bodies (400)."""
    many = gzip.compress(b"") * 5_000
    data = b'{"a": 1}\n' * 100
    assert decompress(many + gzip.compress(data) + many, "gzip", 1 << 20) == data
    with pytest.raises(BodyError) as err:
        decompress(many + gzip.compress(b"\0" * (4 << 20)), "gzip", 1 << 20)
    assert err.value.status == 413
    whole = gzip.compress(data)
    for cut in (1, 10, len(whole) // 2, len(whole) - 1):
        with pytest.raises(BodyError) as err:
            decompress(many + whole[:cut], "gzip", 1 << 20)
        assert (err.value.status, err.value.message) == (400, "gzip body is truncated")
    with pytest.raises(BodyError) as err:
        decompress(many + b"not gzip", "gzip", 1 << 20)
    assert err.value.status == 400 and err.value.message.startswith("gzip body is corrupt")


# --- 8: a truncated trailing zstd frame ------------------------------------------------

_FIRST = b'{"first": 1}\n' * 10
_SECOND = b'{"second": 2}\n' * 1000


def _zstd_second() -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(_SECOND)


@pytest.mark.parametrize(
    "cut",
    [2, 5, 8, "middle", -2],
    ids=["in-magic", "in-header", "in-block-header", "in-block", "in-checksum"],
)
async def test_truncated_trailing_zstd_frame_is_400_like_gzip(
    client: TestClient[Any, Any], handoff: MemoryHandoff, cut: int | str
) -> None:
    """Defect 8: a whole frame then a cut one is 400 "zstd body is truncated", as gzip is."""
    for encoding, pack, second in (
        ("zstd", zstandard.compress, _zstd_second()),
        ("gzip", gzip.compress, gzip.compress(_SECOND)),
    ):
        end = len(second) // 2 if cut == "middle" else int(cut)
        body = pack(_FIRST) + second[:end]
        headers = {**NDJSON, "Content-Encoding": encoding}
        resp = await client.post("/v1/events", data=body, headers=headers)
        assert resp.status == 400, (encoding, await resp.text())
        assert (await resp.json()) == {"error": f"{encoding} body is truncated"}
    assert handoff.events == [] and handoff.rejected == []


def test_zstd_bomb_after_a_whole_frame_is_still_413() -> None:
    """Defect 8: checking every frame keeps the output bound."""
    bomb = zstandard.compress(b" " * (50 << 20))
    assert len(bomb) < 100_000
    with pytest.raises(BodyError) as err:
        decompress(zstandard.compress(_FIRST) + bomb, "zstd", 1 << 20)
    assert err.value.status == 413


def test_zstd_frames_of_every_kind_still_decode() -> None:
    """Defect 8: whole frames (empty, checksummed, skippable, without content size) all count."""
    skippable = (0x184D2A53).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"xyz"
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(_FIRST)
    empty = zstandard.compress(b"")
    body = empty * 1_000 + zstandard.compress(_FIRST) + skippable + _zstd_second() + no_size
    assert decompress(body, "zstd", 1 << 20) == _FIRST + _SECOND + _FIRST
    streamed = zstandard.ZstdCompressor().compressobj()
    chunked = streamed.compress(_FIRST) + streamed.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    chunked += streamed.compress(_SECOND) + streamed.flush()
    assert decompress(chunked, "zstd", 1 << 20) == _FIRST + _SECOND
    with pytest.raises(BodyError) as err:
        decompress(zstandard.compress(_FIRST) + b"garbage!", "zstd", 1 << 20)
    assert err.value.status == 400 and err.value.message.startswith("zstd body is corrupt")


# --- 4: rejected lines are counted, and only the first ones kept -----------------------


async def test_rejects_past_the_first_ones_are_counted_not_kept(
    client: TestClient[Any, Any],
    handoff: MemoryHandoff,
    event_factory: Any,
) -> None:
    """Defect 4: 20,000 bad lines: 100 listed and dead-lettered, all counted (answer, metrics)."""
    good = [event_factory() for _ in range(3)]
    lines = [orjson.dumps(good[0])] + [b"1"] * 10_000 + [orjson.dumps(good[1])]
    lines += [b"1"] * 9_997 + [orjson.dumps(good[2])]
    body = gzip.compress(b"\n".join(lines))
    resp = await client.post(
        "/v1/events", data=body, headers={**NDJSON, "Content-Encoding": "gzip"}
    )
    assert resp.status == 200
    doc = await resp.json()
    assert doc["accepted"] == 3
    assert doc["rejected_count"] == 19_997
    assert doc["rejected_truncated"] is True
    assert len(doc["rejected"]) == MAX_REJECTS_KEPT
    assert [(r["index"], r["line"]) for r in doc["rejected"]] == [
        (i, i + 1) for i in range(1, MAX_REJECTS_KEPT + 1)
    ]
    assert {r["reason"] for r in doc["rejected"]} == {"$: must be a JSON object, got int"}
    assert [r.index for r in handoff.rejected] == list(range(1, MAX_REJECTS_KEPT + 1))
    assert [str(e.event_id) for e in handoff.events] == [g["event_id"] for g in good]
    metrics = await (await client.get("/metrics")).text()
    assert 'telemetry_ingest_events_total{outcome="rejected"} 19997.0' in metrics


async def test_few_rejects_are_all_listed_and_not_truncated(
    client: TestClient[Any, Any], event_factory: Any
) -> None:
    """Defect 4: under the bound the answer is as before, plus the count."""
    body = orjson.dumps([event_factory(), {}, event_factory(latency_ms=-1)])
    resp = await client.post("/v1/events", data=body, headers=JSON)
    doc = await resp.json()
    assert doc["accepted"] == 1
    assert [r["index"] for r in doc["rejected"]] == [1, 2]
    assert (doc["rejected_count"], doc["rejected_truncated"]) == (2, False)


def test_kept_rejects_are_the_first_in_input_order(event_factory: Any) -> None:
    """Defect 4: decode failures and rule failures interleave; the kept ones are the first."""
    lines = [
        b"{not json",
        orjson.dumps(event_factory()),
        orjson.dumps(event_factory(latency_ms=-1)),
        b"1",
        b"{oops",
        orjson.dumps(event_factory()),
        b"2",
    ]
    parsed = parse_events(b"\n".join(lines), "ndjson", source="t", keep=3)
    assert [(r.index, r.field) for r in parsed.rejected] == [(0, "$"), (2, "latency_ms"), (3, "$")]
    assert parsed.lines == [1, 3, 4]
    assert (parsed.rejected_count, parsed.rejected_truncated) == (5, True)
    assert len(parsed.events) == 2 and parsed.total == 7


@pytest.mark.parametrize("kind", ["ndjson", "json"])
def test_bad_items_cost_no_per_reject_objects(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Defect 4: past the kept ones, a bad item builds no ``Rejected`` and copies no bytes."""
    built = {"rejected": 0, "raw_bytes": 0}
    real_rejected, real_raw_bytes = body_module.Rejected, body_module.raw_bytes

    def counted_rejected(*args: Any, **kwargs: Any) -> Any:
        built["rejected"] += 1
        return real_rejected(*args, **kwargs)

    def counted_raw_bytes(item: Any) -> bytes:
        built["raw_bytes"] += 1
        return real_raw_bytes(item)

    monkeypatch.setattr(body_module, "Rejected", counted_rejected)
    monkeypatch.setattr(body_module, "raw_bytes", counted_raw_bytes)
    n = 50_000
    body = b"\n".join([b"1", b"{}", b"[]", b"{x"] * (n // 4))
    if kind == "json":
        body = b"[" + b",".join([b"1", b"{}", b"[]", b'"x"'] * (n // 4)) + b"]"
    parsed = parse_events(body, kind, source="t")
    assert parsed.rejected_count == n
    assert len(parsed.rejected) == len(parsed.lines) == MAX_REJECTS_KEPT
    assert built["rejected"] == MAX_REJECTS_KEPT
    assert built["raw_bytes"] <= MAX_REJECTS_KEPT


async def test_more_items_than_the_limit_is_413_naming_it(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    """Defect 4: past MAX_ITEMS lines or array items the answer is 413, before any per-item work."""
    lines = b"1\n" * (MAX_ITEMS + 1)
    resp = await client.post("/v1/events", data=lines, headers=NDJSON)
    assert resp.status == 413
    assert f"over the limit of {MAX_ITEMS} per request" in (await resp.json())["error"]
    array = b"[" + b"1," * MAX_ITEMS + b"1]"
    resp = await client.post("/v1/events", data=array, headers=JSON)
    assert resp.status == 413
    assert f"over the limit of {MAX_ITEMS} per request" in (await resp.json())["error"]
    resp = await client.post("/v1/events", data=b"1\n" * MAX_ITEMS, headers=NDJSON)
    assert resp.status == 200 and (await resp.json())["rejected_count"] == MAX_ITEMS
    assert len(handoff.rejected) == MAX_REJECTS_KEPT


@pytest.mark.timeout(60)  # a hang guard: the reported body took 173 s and 4 GB
async def test_reported_body_of_8_million_bad_lines_is_refused(
    client: TestClient[Any, Any], handoff: MemoryHandoff
) -> None:
    """Defect 4: the 16 KB gzip body of 8,000,000 lines ``1`` is a 413, and stores nothing."""
    body = gzip.compress(b"1\n" * 8_000_000, compresslevel=9)
    assert len(body) < 20_000
    resp = await client.post(
        "/v1/events", data=body, headers={**NDJSON, "Content-Encoding": "gzip"}
    )
    assert resp.status == 413
    assert "8000000 lines" in (await resp.json())["error"]
    assert handoff.events == [] and handoff.rejected == []
    assert (await client.get("/healthz")).status == 200


@pytest.mark.timeout(60)  # a hang guard: a regression would block the loop for 10 s, then fail
async def test_validation_runs_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, client: TestClient[Any, Any], event_factory: Any
) -> None:
    """Defect 4: /healthz is answered while a body is being validated."""
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}
    real = app_module.parse_events

    def slow_parse(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            seen["on_loop"] = True
        except RuntimeError:
            seen["on_loop"] = False
        entered.set()
        release.wait(10)
        try:
            return real(*args, **kwargs)
        finally:
            seen["done"] = True

    monkeypatch.setattr(app_module, "parse_events", slow_parse)
    post = asyncio.create_task(
        client.post("/v1/events", data=orjson.dumps([event_factory()]), headers=JSON)
    )
    assert await asyncio.to_thread(entered.wait, 10)
    health = await client.get("/healthz")
    assert health.status == 200
    assert "done" not in seen  # answered while validation was still under way
    release.set()
    resp = await post
    assert resp.status == 200 and (await resp.json())["accepted"] == 1
    assert seen["on_loop"] is False


# --- 4: `telemetry ingest FILE` keeps a bounded number of rejects per file -------------


def test_ingest_file_keeps_at_most_the_first_rejects_and_counts_all(
    monkeypatch: pytest.MonkeyPatch, event_factory: Any
) -> None:
    """Defect 4: 30,000 bad lines in a file: 10,000 rows for telemetry.rejected, all counted."""
    stored: list[Any] = []
    monkeypatch.setattr(
        ingest_module, "write_rejected", lambda ch, items: stored.extend(items) or len(items)
    )
    monkeypatch.setattr(ingest_module, "write_events", lambda ch, events: len(events))
    keep = ingest_module.MAX_REJECTS_KEPT
    bad = 3 * keep
    lines = [orjson.dumps(event_factory())] + [b"1"] * bad + [orjson.dumps(event_factory())]
    report = ingest_module.ingest_lines(
        None,  # type: ignore[arg-type]  # the writers are replaced
        [b"\n".join(lines)],
        source="ingest:test",
        batch_size=4_000,
        do_refresh=False,
    )
    assert (report.accepted, report.rejected) == (2, bad)
    assert report.rejected_kept == len(stored) == keep
    assert report.rejected_not_kept == bad - keep
    assert [r.location for r in stored[:2]] == ["line 2", "line 3"]
    assert stored[-1].location == f"line {keep + 1}"


def test_ingest_summary_says_how_many_rejects_were_not_kept() -> None:
    """Defect 4: the command's summary names what was not kept and where the rest went."""
    report = IngestReport(accepted=2, rejected=30_000, rejected_kept=10_000)
    report.rejected_samples = [(2, "$: must be a JSON object, got int")]
    with console.capture() as out, err_console.capture() as err:
        ingest_cmd._summary(report, "2 new, 0 duplicates", "telemetry.rejected")
    assert "accepted 2, rejected 30000" in out.get()
    assert "9999 more in telemetry.rejected" in err.get()
    assert "20000 rejected lines not kept" in err.get()
