"""Bad input where the HTTP door's batch path could differ from judging one event at a time.

The door validates a body in chunks (``collector.http.body._CHUNK`` items per
call of ``schemas.batch.encode_docs``) and hands the valid events on as their
encoded bytes. Each case here is judged twice: by ``parse_events`` and by the
definition, one line (or item) at a time through ``decode_event`` /
``validate_event``; the accepted events (their exact bytes), the rejected
ones (index, line, field, reason) and the order must be the same.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from body_judge import check_array, check_ndjson
from prometheus_client import CollectorRegistry

import collector.http.body as body_module
from collector.handoff import MemoryHandoff
from collector.http.app import create_app
from collector.http.body import MAX_ITEMS
from schemas.codec import MAX_EVENT_BYTES, validate_event

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(factory: Any, k: int) -> dict[str, Any]:
    ts = (NOW - timedelta(seconds=k)).isoformat().replace("+00:00", "Z")
    return factory(ts=ts, model=f"m/{k % 7}", latency_ms=1000.0 + k % 13)


def test_bad_lines_at_the_chunk_boundaries(event_factory: Any) -> None:
    chunk = body_module._CHUNK
    n = 2 * chunk + 10
    lines = [orjson.dumps(_event(event_factory, k)) for k in range(n)]
    for at in (0, chunk - 1, chunk, chunk + 1, 2 * chunk - 1, 2 * chunk, n - 1):
        lines[at] = orjson.dumps({**_event(event_factory, at), "ttft_ms": 5e6})
    good, bad = check_ndjson(b"\n".join(lines), NOW)
    assert len(good) == n - 7 and [b[0] for b in bad][1:3] == [chunk - 1, chunk]


def test_a_huge_line_is_one_rejected_event_and_its_neighbours_are_kept(
    event_factory: Any,
) -> None:
    huge = orjson.dumps({**event_factory(), "pad": "x" * (3 * 1024 * 1024)})
    just_over = orjson.dumps({**event_factory(), "pad": "y" * MAX_EVENT_BYTES})
    lines = [orjson.dumps(event_factory()), huge, orjson.dumps(event_factory()), just_over]
    good, bad = check_ndjson(b"\n".join(lines), NOW)
    assert len(good) == 2 and [(b[1], b[2]) for b in bad] == [(2, "$"), (4, "$")]
    assert "byte limit" in bad[0][3]


def test_invalid_utf8_a_bom_and_crlf_line_ends(event_factory: Any) -> None:
    ok = orjson.dumps(event_factory())
    bad_utf8 = orjson.dumps(event_factory(gateway_id="gw")).replace(b'"gw"', b'"g\xffw"')
    lone = orjson.dumps(event_factory(gateway_id="gw")).replace(b'"gw"', b'"\\ud800"')
    bom = b"\xef\xbb\xbf" + orjson.dumps(event_factory())
    body = b"\r\n".join([ok, bad_utf8, ok, lone, bom, ok]) + b"\r\n"
    good, bad = check_ndjson(body, NOW)
    assert len(good) == 3 and [b[1] for b in bad] == [2, 4, 5]
    crlf_only = b"\r\n".join(orjson.dumps(event_factory()) for _ in range(20)) + b"\r\n"
    assert len(check_ndjson(crlf_only, NOW)[0]) == 20


def test_empty_and_blank_lines_count_in_line_numbers_only(event_factory: Any) -> None:
    ev = [orjson.dumps(event_factory()) for _ in range(3)]
    body = b"\n\n" + ev[0] + b"\n \t\n\r\n" + b"{}" + b"\n\n" + ev[1] + b"\n" + ev[2] + b"\n\n"
    good, bad = check_ndjson(body, NOW)
    assert len(good) == 3 and bad == [(1, 6, "event_id", "event_id: is required")]


def test_one_giant_json_array(event_factory: Any) -> None:
    """The largest array a request may hold, with bad items spread over it."""
    items: list[Any] = [_event(event_factory, k) for k in range(MAX_ITEMS)]
    for at in range(0, MAX_ITEMS, 9_973):
        items[at] = {**items[at], "status": "error"}  # error_type is then required
    items[-1] = 7
    _, bad = check_array(items, NOW)
    assert len(bad) == len(range(0, MAX_ITEMS, 9_973)) + 1


@pytest.fixture
async def client(event_factory: Any) -> Any:
    handoff = MemoryHandoff()
    app = create_app(handoff=handoff, auth=None, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as c:
        c.handoff = handoff
        yield c


async def test_through_the_door_the_handoff_gets_the_models_events(
    client: TestClient[Any, Any], event_factory: Any
) -> None:
    """What the handoff receives iterates as the events the model builds from the input."""
    docs = [event_factory(ts=datetime.now(UTC).isoformat()) for _ in range(30)]
    lines = [orjson.dumps(d) for d in docs]
    lines[7] = b"\xef\xbb\xbf" + lines[7]
    resp = await client.post(
        "/v1/events",
        data=b"\r\n".join(lines) + b"\r\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    doc = await resp.json()
    assert resp.status == 200 and doc["accepted"] == 29
    assert [(r["index"], r["line"], r["field"]) for r in doc["rejected"]] == [(7, 8, "$")]
    handoff: MemoryHandoff = client.handoff  # type: ignore[attr-defined]
    want = [validate_event(d) for k, d in enumerate(docs) if k != 7]
    assert [e.model_dump() for e in handoff.events] == [e.model_dump() for e in want]
