"""The HTTP service on a real broker: partial success, the DLQ, and bad input at the door."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import zstandard

from collector.auth import TokenAuth, hash_token
from collector.server import ServiceConfig
from schemas.event_record import RECORD_HEADERS, record_lines

from .conftest import read_events, read_topic, running_service

pytestmark = pytest.mark.integration

TOKEN = "gw-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config(bootstrap: str, tmp_path: Path, topics: dict[str, str], **kw: Any) -> ServiceConfig:
    return ServiceConfig(
        bootstrap_servers=bootstrap,
        spool_dir=tmp_path / "spool",
        auth=TokenAuth([hash_token(TOKEN)]),
        port=0,
        max_body=256 * 1024,
        max_decompressed=1024 * 1024,
        **topics,
        **kw,
    )


async def test_mixed_batch_valid_to_topic_invalid_to_dlq(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    good = [event_factory() for _ in range(50)]
    bad = [event_factory(cached_input_tokens=10**6), event_factory(ts="2999-01-01T00:00:00Z")]
    body = [*good[:25], bad[0], *good[25:], bad[1]]
    async with (
        running_service(config(kafka_bootstrap, tmp_path, topics)) as url,
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/v1/events",
            data=orjson.dumps(body),
            headers={**AUTH, "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 200
        doc = await resp.json()
    assert doc["accepted"] == 50
    assert [(r["index"], r["field"]) for r in doc["rejected"]] == [
        (25, "cached_input_tokens"),
        (51, "ts"),
    ]
    # One request, one model (one partition): one Kafka record with the valid events,
    # in the request's order.
    (record,) = await read_topic(kafka_bootstrap, topics["topic"])
    assert record.key is None and list(record.headers) == RECORD_HEADERS
    ids = [orjson.loads(line)["event_id"] for line in record_lines(record.value, record.headers)]
    assert ids == [e["event_id"] for e in good]
    dlq = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, topics["dlq_topic"])]
    assert sorted((d["index"], d["field"]) for d in dlq) == [
        (25, "cached_input_tokens"),
        (51, "ts"),
    ]
    for d in dlq:
        assert d["reason"].startswith(d["field"])
        assert orjson.loads(d["raw"])["event_id"] in {b["event_id"] for b in bad}
        assert d["source"].startswith("http:")


async def test_bad_input_at_the_door(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    valid: list[dict[str, Any]] = []

    def batch(n: int) -> list[dict[str, Any]]:
        out = [event_factory() for _ in range(n)]
        return out

    ndjson = {**AUTH, "Content-Type": "application/x-ndjson"}
    cases: list[tuple[str, dict[str, str], bytes, int]] = [
        ("no token", {"Content-Type": "application/json"}, b"[]", 401),
        (
            "wrong token",
            {"Authorization": "Bearer nope", "Content-Type": "application/json"},
            b"[]",
            401,
        ),
        ("text/plain", {**AUTH, "Content-Type": "text/plain"}, b"[]", 415),
        ("no content type", AUTH, b"[]", 415),
        ("brotli", {**ndjson, "Content-Encoding": "br"}, b"x", 415),
        ("gzip that is not", {**ndjson, "Content-Encoding": "gzip"}, b"plain text", 400),
        ("zstd that is not", {**ndjson, "Content-Encoding": "zstd"}, b"plain text", 400),
        (
            "truncated gzip",
            {**ndjson, "Content-Encoding": "gzip"},
            gzip.compress(b"{}" * 999)[:20],
            400,
        ),
        ("malformed array", {**AUTH, "Content-Type": "application/json"}, b'[{"event_id": ', 400),
        ("too big", ndjson, b" " * (300 * 1024), 413),
        (
            "zip bomb",
            {**ndjson, "Content-Encoding": "zstd"},
            zstandard.compress(b" " * (8 << 20)),
            413,
        ),
    ]
    async with (
        running_service(config(kafka_bootstrap, tmp_path, topics)) as url,
        aiohttp.ClientSession() as http,
    ):
        for name, headers, data, status in cases:
            async with http.post(f"{url}/v1/events", data=data, headers=headers) as resp:
                assert resp.status == status, name
                assert "error" in await resp.json(), name
        # NDJSON mixing valid lines, garbage and a huge line, gzip encoded
        good = batch(30)
        valid.extend(good)
        lines = [orjson.dumps(e) for e in good[:10]]
        lines += [b"{garbage", b'{"event_id": "' + b"9" * 70_000 + b'"}']
        lines += [orjson.dumps(e) for e in good[10:]]
        async with http.post(
            f"{url}/v1/events",
            data=gzip.compress(b"\n".join(lines)),
            headers={**ndjson, "Content-Encoding": "gzip"},
        ) as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert doc["accepted"] == 30
        assert [(r["index"], r["line"], r["field"]) for r in doc["rejected"]] == [
            (10, 11, "$"),
            (11, 12, "$"),
        ]
        # still up, still accepting
        more = batch(5)
        valid.extend(more)
        async with http.post(
            f"{url}/v1/events",
            data=zstandard.compress(orjson.dumps(more)),
            headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "zstd"},
        ) as resp:
            assert (await resp.json()) == {
                "accepted": 5,
                "rejected": [],
                "rejected_count": 0,
                "rejected_truncated": False,
            }
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{url}/readyz") as resp:
            assert resp.status == 200
    ids = [
        orjson.loads(e.value)["event_id"]
        for e in await read_events(kafka_bootstrap, topics["topic"])
    ]
    assert sorted(ids) == sorted(e["event_id"] for e in valid)
    dlq = await read_topic(kafka_bootstrap, topics["dlq_topic"])
    assert len(dlq) == 2
    assert max(len(r.value) for r in dlq) < 10_000  # the huge line's raw is truncated
