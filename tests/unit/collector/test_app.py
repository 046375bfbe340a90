"""The HTTP door with an in-memory handoff: status codes, partial success, limits."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import zstandard
from aiohttp.test_utils import TestClient
from ingest_util import AUTH, TOKEN

from collector.handoff import MemoryHandoff

JSON = {**AUTH, "Content-Type": "application/json"}


async def test_mixed_batch_accepts_the_valid_and_explains_the_rest(
    client: TestClient[Any, Any], handoff: MemoryHandoff, event_factory: Any
) -> None:
    good = [event_factory(), event_factory()]
    body = [good[0], event_factory(latency_ms=-1), good[1], {"event_id": "x"}]
    resp = await client.post("/v1/events", data=orjson.dumps(body), headers=JSON)
    assert resp.status == 200
    doc = await resp.json()
    assert doc["accepted"] == 2
    assert [(r["index"], r["field"]) for r in doc["rejected"]] == [
        (1, "latency_ms"),
        (3, "event_id"),
    ]
    assert [str(e.event_id) for e in handoff.events] == [g["event_id"] for g in good]
    assert [r.index for r in handoff.rejected] == [1, 3]
    assert all(r.source.startswith("http:") for r in handoff.rejected)


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "identity"])
async def test_ndjson_in_every_encoding(
    client: TestClient[Any, Any], handoff: MemoryHandoff, event_factory: Any, encoding: str
) -> None:
    raw = b"\n".join(orjson.dumps(event_factory()) for _ in range(20))
    data = {"gzip": gzip.compress, "zstd": zstandard.compress, "identity": bytes}[encoding](raw)
    headers = {**AUTH, "Content-Type": "application/x-ndjson", "Content-Encoding": encoding}
    resp = await client.post("/v1/events", data=data, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {
        "accepted": 20,
        "rejected": [],
        "rejected_count": 0,
        "rejected_truncated": False,
    }
    assert len(handoff.events) == 20


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_no_valid_token_no_entry(
    client: TestClient[Any, Any],
    handoff: MemoryHandoff,
    headers: dict[str, str],
    event_factory: Any,
) -> None:
    resp = await client.post(
        "/v1/events",
        data=orjson.dumps([event_factory()]),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert handoff.events == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/json", "Content-Encoding": "br"}, 415),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400),
        ({"Content-Type": "application/json", "Content-Encoding": "zstd"}, 400),
    ],
)
async def test_wrong_types_and_encodings(
    client: TestClient[Any, Any], headers: dict[str, str], status: int
) -> None:
    resp = await client.post("/v1/events", data=b"[]", headers={**AUTH, **headers})
    assert resp.status == status
    assert "error" in await resp.json()


async def test_malformed_json_is_400_and_the_service_stays_up(
    client: TestClient[Any, Any], event_factory: Any
) -> None:
    for body in (b"[{", b"\xff\xfe", b"{}{}", b"null"):
        resp = await client.post("/v1/events", data=body, headers=JSON)
        assert resp.status == 400, body
    resp = await client.post("/v1/events", data=orjson.dumps([event_factory()]), headers=JSON)
    assert resp.status == 200


async def test_oversized_bodies_are_413(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/events", data=b"[" + b" " * 70_000 + b"]", headers=JSON)
    assert resp.status == 413
    bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")
    resp = await client.post("/v1/events", data=bomb, headers={**JSON, "Content-Encoding": "gzip"})
    assert resp.status == 413


async def test_chunked_oversized_body_is_413(client: TestClient[Any, Any]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    resp = await client.post("/v1/events", data=chunks(), headers=JSON)
    assert resp.status == 413


async def test_backlog_is_429_with_retry_after(
    client: TestClient[Any, Any], handoff: MemoryHandoff, event_factory: Any
) -> None:
    handoff.busy = 2.4
    resp = await client.post("/v1/events", data=orjson.dumps([event_factory()]), headers=JSON)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "2"
    assert handoff.events == []


async def test_health_ready_metrics_openapi(
    client: TestClient[Any, Any], handoff: MemoryHandoff, event_factory: Any
) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    handoff.is_ready = False
    assert (await client.get("/readyz")).status == 503
    await client.post("/v1/events", data=orjson.dumps([event_factory(), {}]), headers=JSON)
    text = await (await client.get("/metrics")).text()
    assert 'telemetry_ingest_events_total{outcome="accepted"} 1.0' in text
    assert 'telemetry_ingest_events_total{outcome="rejected"} 1.0' in text
    doc = await (await client.get("/openapi.json")).json()
    assert "/v1/events" in doc["paths"]
