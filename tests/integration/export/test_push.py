"""--push against a local catalog that fails the first attempts."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from processors.export.document import build_documents
from processors.export.errors import ExportConfigError
from processors.export.push import PushPolicy, push_documents
from processors.export.run import ExportOptions, export_once

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"
FAST = PushPolicy(attempts=4, backoff_s=0.01, jitter=0.0)


class Catalog:
    """A catalog on 127.0.0.1: answers 503 to the first ``fail_first`` PUTs of each model."""

    def __init__(self, fail_first: int = 2) -> None:
        self.fail_first = fail_first
        self.attempts: dict[str, int] = defaultdict(int)
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.stored: dict[str, bytes] = {}
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        self.attempts[model] += 1
        body = await request.read()
        self.received[model].append({"headers": dict(request.headers), "body": body})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="bad token")
        if model.startswith("refused/"):
            return web.Response(status=422, text="unknown model")
        if model.startswith("limited/") and self.attempts[model] == 1:
            return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
        if self.attempts[model] <= self.fail_first:
            return web.Response(status=503, text="try again")
        self.stored[model] = body
        return web.Response(status=201 if self.attempts[model] else 200, text="stored")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_put("/api/stats/{model:.+}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api/stats"

    def __enter__(self) -> Catalog:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def catalog() -> Iterator[Catalog]:
    with Catalog() as c:
        yield c


def _docs(make: Any, models: list[str]) -> Any:
    rows = [r for m in models for r in make(m)]
    return build_documents(rows, max_age=None).documents


def _rows(now: datetime) -> Any:
    from processors.aggregate.window import window_start

    def make(model: str) -> list[dict[str, Any]]:
        return [
            {
                "model": model,
                "provider": "",
                "as_of": now,
                "window_start": window_start(now),
                "requests": 500,
                "input_tokens": 1,
                "output_tokens": 2,
                "traffic_tokens": 3,
                "errors": 5,
                "error_denominator": 500,
                "error_rate": 0.01,
                "ttft_samples": 500,
                "ttft_p50_ms": 2297.0,
                "ttft_p95_ms": 10900.0,
                "ttft_p99_ms": 20000.0,
                "output_tps_samples": 500,
                "output_tps_p50": 175.0,
            }
        ]

    return make


def test_push_retries_then_reports_per_model(catalog: Catalog, now: datetime) -> None:
    docs = _docs(_rows(now), ["openai/gpt-4.1-mini", "refused/x", "limited/y"])
    results = asyncio.run(push_documents(catalog.url, docs, token=TOKEN, policy=FAST))
    by_model = {r.model: r for r in results}

    ok = by_model["openai/gpt-4.1-mini"]
    assert ok.ok and ok.status == 201 and ok.attempts == 3 and "stored" in ok.message
    refused = by_model["refused/x"]  # a 4xx other than 408/425/429 is final: no retry
    assert not refused.ok and refused.status == 422 and refused.attempts == 1
    assert "unknown model" in refused.message
    limited = by_model["limited/y"]  # 429, then 503, 503 (fail_first), then stored
    assert limited.ok and limited.attempts == 3

    sent = catalog.received["openai/gpt-4.1-mini"]
    keys = {r["headers"]["Idempotency-Key"] for r in sent}
    as_of = json.loads(sent[0]["body"])["as_of"]
    assert keys == {f"openai/gpt-4.1-mini@{as_of}"}  # the same key on every retry
    doc = next(d for d in docs if d.model == "openai/gpt-4.1-mini")
    assert all(r["body"] == doc.encode() for r in sent)
    assert sent[0]["headers"]["Content-Type"] == "application/json"
    assert catalog.stored["openai/gpt-4.1-mini"] == doc.encode()


def test_push_gives_up_after_the_attempts(now: datetime) -> None:
    with Catalog(fail_first=10) as catalog:
        docs = _docs(_rows(now), ["a/b"])
        (result,) = asyncio.run(push_documents(catalog.url, docs, token=TOKEN, policy=FAST))
    assert not result.ok and result.attempts == 4 and result.status == 503
    assert result.message.startswith("gave up after 4")


def test_push_connection_refused_is_reported(now: datetime) -> None:
    docs = _docs(_rows(now), ["a/b"])
    url = "http://127.0.0.1:9/api/stats"  # discard port: nothing listens
    (result,) = asyncio.run(push_documents(url, docs, token=TOKEN, policy=FAST))
    assert not result.ok and result.status is None and result.attempts == 4


def test_export_once_pushes_and_needs_a_token(
    clickhouse: Any,
    tmp_path: Path,
    now: datetime,
    data: Any,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data.insert(clickhouse, data.stats_rows(now, {"a/b": {"x": 500}, "c/d": {"y": 300}}))
    options = ExportOptions(out=tmp_path / "e", fsync=False, push_url=catalog.url, push_policy=FAST)
    monkeypatch.delenv("TELEMETRY_CATALOG_TOKEN", raising=False)
    with pytest.raises(ExportConfigError, match="TELEMETRY_CATALOG_TOKEN"):
        export_once(clickhouse, options, now=now)
    monkeypatch.setenv("TELEMETRY_CATALOG_TOKEN", TOKEN)
    report = export_once(clickhouse, options, now=now)
    assert [(p.model, p.ok, p.attempts) for p in report.pushed] == [
        ("a/b", True, 3),
        ("c/d", True, 3),
    ]
    assert catalog.stored["a/b"] == (tmp_path / "e/models/a/b.json").read_bytes()
