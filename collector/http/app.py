"""The aiohttp application of the ingest service, built around an injected ``Handoff``.

``POST /v1/events``  events in (JSON array or NDJSON; gzip, zstd or identity)
``GET /healthz``     the process answers
``GET /readyz``      the handoff can take events (Kafka connected or spool writable)
``GET /metrics``     Prometheus text
``GET /openapi.json`` the API description (``collector/openapi.json`` is its checked-in copy)

Answer to a parsed batch: always 200 with ``{"accepted": N, "rejected": [...],
"rejected_count": R, "rejected_truncated": bool}``; ``rejected`` lists the first
``MAX_REJECTS_KEPT`` rejected items (the ones dead-lettered), ``rejected_count``
counts them all. A listed item names its ``index`` (0-based position in the array,
or among the non-blank NDJSON lines), its ``line`` (NDJSON), ``field`` and ``reason``.

Decoding and validation run in a small thread pool, not on the event loop: a big
body must not stop ``/healthz`` (or other requests) from being answered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collector.auth import TokenAuth
from collector.exceptions import SpoolUnavailable
from collector.handoff import Handoff
from collector.http.body import (
    BodyError,
    Parsed,
    content_encoding,
    content_kind,
    decompress,
    parse_events,
)
from collector.http.openapi import build_openapi
from collector.metrics import IngestMetrics

__all__ = ["DEFAULT_MAX_BODY", "DEFAULT_MAX_DECOMPRESSED", "IngestLimits", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024
#: Threads that decode and validate bodies. Validation holds the GIL, so more would
#: not add throughput; the loop stays free to answer while they work.
DECODE_THREADS = 4

HANDOFF_KEY: web.AppKey[Handoff] = web.AppKey("handoff", Handoff)


@dataclass(frozen=True)
class IngestLimits:
    max_body: int = DEFAULT_MAX_BODY
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED

    def __post_init__(self) -> None:
        if self.max_body < 1024:
            raise ValueError(f"max_body must be at least 1024 bytes, got {self.max_body}")
        if self.max_decompressed < self.max_body:
            raise ValueError("max_decompressed must be >= max_body")


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(doc),
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"error": message}, headers)


def _read_events(body: bytes, encoding: str, kind: str, *, limit: int, source: str) -> Parsed:
    """Decompress and validate: CPU work, run off the event loop."""
    return parse_events(decompress(body, encoding, limit), kind, source=source)


def _answer(parsed: Parsed) -> dict[str, Any]:
    rejected = []
    for r, line in zip(parsed.rejected, parsed.lines, strict=True):
        item: dict[str, Any] = {"index": r.index, "field": r.field, "reason": r.reason}
        if line is not None:
            item["line"] = line
        rejected.append(item)
    return {
        "accepted": len(parsed.events),
        "rejected": rejected,
        "rejected_count": parsed.rejected_count,
        "rejected_truncated": parsed.rejected_truncated,
    }


def create_app(
    *,
    handoff: Handoff,
    auth: TokenAuth | None,
    registry: CollectorRegistry,
    limits: IngestLimits | None = None,
    problem: Callable[[], str | None] | None = None,
) -> web.Application:
    """The ingest app. ``auth=None`` means no authentication (only with --insecure-no-auth).

    ``problem`` says what keeps the service behind the door from doing its job
    (e.g. the embedded stats refresh failing), or None; /readyz reports it.
    """
    limits = limits or IngestLimits()
    metrics = IngestMetrics(registry)
    openapi = orjson.dumps(build_openapi(limits.max_body))
    decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="ingest-decode")

    async def post_events(request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await _post_events(request)
        metrics.requests.labels(str(response.status)).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _post_events(request: web.Request) -> web.Response:
        identity = "anonymous"
        if auth is not None:
            who = auth.check(request.headers.get("Authorization"))
            if who is None:
                return _error(
                    401,
                    "missing or invalid bearer token",
                    {"WWW-Authenticate": 'Bearer realm="telemetry"'},
                )
            identity = who
        try:
            kind = content_kind(request.headers.get("Content-Type"))
            encoding = content_encoding(request.headers.get("Content-Encoding"))
        except BodyError as exc:
            return _error(exc.status, exc.message)
        if request.content_length is not None and request.content_length > limits.max_body:
            return _error(413, f"body is over the {limits.max_body} byte limit")
        retry = handoff.retry_after()
        if retry is not None:
            return _error(
                429,
                "backlog past its bound; retry later",
                {"Retry-After": str(max(1, round(retry)))},
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body is over the {limits.max_body} byte limit")
        source = f"http:{identity}@{request.remote or '?'}"
        read = functools.partial(
            _read_events, body, encoding, kind, limit=limits.max_decompressed, source=source
        )
        try:
            parsed = await asyncio.get_running_loop().run_in_executor(decoders, read)
        except BodyError as exc:
            return _error(exc.status, exc.message)
        try:
            if parsed.rejected:
                await handoff.dead_letter(parsed.rejected)
            if parsed.events:
                await handoff.hand_over(parsed.events)
        except (SpoolUnavailable, RuntimeError) as exc:
            log.error("ingest: could not hand over %d events: %s", parsed.total, exc)
            return _error(503, "cannot store events right now; retry", {"Retry-After": "5"})
        metrics.events.labels("accepted").inc(len(parsed.events))
        metrics.events.labels("rejected").inc(parsed.rejected_count)
        return _json(200, _answer(parsed))

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not handoff.ready():
            return _json(503, {"status": "not ready", "reason": "cannot store events"})
        reason = problem() if problem else None
        if reason:
            return _json(503, {"status": "not ready", "reason": reason})
        return _json(200, {"status": "ready"})

    async def metrics_view(request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def openapi_view(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    async def stop_decoders(app: web.Application) -> None:
        decoders.shutdown(wait=False, cancel_futures=True)

    # We decode Content-Encoding ourselves, with a bound on the output (zip bombs).
    app = web.Application(client_max_size=limits.max_body, handler_args={"auto_decompress": False})
    app[HANDOFF_KEY] = handoff
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/openapi.json", openapi_view)
    app.on_cleanup.append(stop_decoders)
    return app
