"""The aiohttp application of the ingest service, built around an injected ``Handoff``.

``POST /v1/events``  events in (JSON array or NDJSON; gzip, zstd or identity)
``POST /v1/traces``  OTLP/HTTP trace exports in (protobuf or OTLP/JSON): each GenAI span
                     is mapped to an event (``collector.otlp``) and judged like one
``GET /healthz``     the process answers
``GET /readyz``      the handoff can take events (Kafka connected or spool writable)
``GET /metrics``     Prometheus text
``GET /openapi.json`` the API description (``collector/openapi.json`` is its checked-in copy)

Answer to a parsed batch: always 200 with ``{"accepted": N, "rejected": [...],
"rejected_count": R, "rejected_truncated": bool}``; ``rejected`` lists the first
``MAX_REJECTS_KEPT`` rejected items (the ones dead-lettered), ``rejected_count``
counts them all. A listed item names its ``index`` (0-based position in the array,
or among the non-blank NDJSON lines), its ``line`` (NDJSON), ``field`` and ``reason``.

``/v1/traces`` answers per OTLP/HTTP: an ``ExportTraceServiceResponse`` whose
``partial_success`` counts the rejected spans, and a ``google.rpc.Status`` body for
every error, both encoded like the request. Auth, limits, 429 and the handoff are
the same code as ``/v1/events``.

Decoding and validation run in a small thread pool, not on the event loop: a big
body must not stop ``/healthz`` (or other requests) from being answered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collector import otlp
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
from collector.otlp import ParsedSpans

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


def _decode(
    read: Callable[..., Parsed], body: bytes, encoding: str, kind: str, *, limit: int, source: str
) -> Parsed:
    """Decompress, decode, validate and encode: CPU work, run off the event loop."""
    return read(decompress(body, encoding, limit), kind, source=source)


def _answer(parsed: Parsed, content_type: str | None = None) -> web.Response:
    return _json(200, _answer_doc(parsed))


def _answer_doc(parsed: Parsed) -> dict[str, Any]:
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


def _plain_error(
    status: int, message: str, headers: dict[str, str] | None, content_type: str | None
) -> web.Response:
    return _error(status, message, headers)


def _otlp_answer(parsed: Parsed, content_type: str | None) -> web.Response:
    media = otlp.media_type(content_type)
    return web.Response(status=200, body=otlp.export_response(parsed, media), content_type=media)


def _otlp_error(
    status: int, message: str, headers: dict[str, str] | None, content_type: str | None
) -> web.Response:
    """OTLP/HTTP: every 4xx/5xx carries a ``google.rpc.Status``, encoded like the request."""
    media = otlp.media_type(content_type)
    body = otlp.error_body(status, message, media)
    return web.Response(status=status, body=body, content_type=media, headers=headers)


@dataclass(frozen=True)
class _Door:
    """What one POST route does differently: its body format and its answers."""

    kind: Callable[[str | None], str]
    read: Callable[..., Parsed]
    answer: Callable[[Parsed, str | None], web.Response]
    error: Callable[[int, str, dict[str, str] | None, str | None], web.Response]


def _read_events(body: bytes, kind: str, *, source: str) -> Parsed:
    return parse_events(body, kind, source=source)  # looked up per call: tests wrap it


def _read_traces(body: bytes, kind: str, *, source: str) -> Parsed:
    return otlp.parse_traces(body, kind, source=source)


_EVENTS = _Door(content_kind, _read_events, _answer, _plain_error)
_TRACES = _Door(otlp.content_kind, _read_traces, _otlp_answer, _otlp_error)


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
        return await _timed(_post(request, _EVENTS))

    async def post_traces(request: web.Request) -> web.Response:
        return await _timed(_post(request, _TRACES))

    async def _timed(answer: Awaitable[web.Response]) -> web.Response:
        started = time.perf_counter()
        response = await answer
        metrics.requests.labels(str(response.status)).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _post(request: web.Request, door: _Door) -> web.Response:
        """One flow for both doors: only the body's format and the answer's differ."""
        content_type = request.headers.get("Content-Type")

        def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
            return door.error(status, message, headers, content_type)

        identity = "anonymous"
        if auth is not None:
            who = auth.check(request.headers.get("Authorization"))
            if who is None:
                return error(
                    401,
                    "missing or invalid bearer token",
                    {"WWW-Authenticate": 'Bearer realm="telemetry"'},
                )
            identity = who
        try:
            kind = door.kind(content_type)
            encoding = content_encoding(request.headers.get("Content-Encoding"))
        except BodyError as exc:
            return error(exc.status, exc.message)
        if request.content_length is not None and request.content_length > limits.max_body:
            return error(413, f"body is over the {limits.max_body} byte limit")
        retry = handoff.retry_after()
        if retry is not None:
            return error(
                429,
                "backlog past its bound; retry later",
                {"Retry-After": str(max(1, round(retry)))},
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"body is over the {limits.max_body} byte limit")
        source = f"http:{identity}@{request.remote or '?'}"
        read = functools.partial(
            _decode, door.read, body, encoding, kind, limit=limits.max_decompressed, source=source
        )
        try:
            parsed = await asyncio.get_running_loop().run_in_executor(decoders, read)
        except BodyError as exc:
            return error(exc.status, exc.message)
        try:
            if parsed.rejected:
                await handoff.dead_letter(parsed.rejected)
            if parsed.events:
                await handoff.hand_over(parsed.events)
        except (SpoolUnavailable, RuntimeError) as exc:
            log.error("ingest: could not hand over %d events: %s", parsed.total, exc)
            return error(503, "cannot store events right now; retry", {"Retry-After": "5"})
        metrics.events.labels("accepted").inc(len(parsed.events))
        metrics.events.labels("rejected").inc(parsed.rejected_count)
        if isinstance(parsed, ParsedSpans) and parsed.ignored:
            metrics.events.labels("ignored").inc(parsed.ignored)
        return door.answer(parsed, content_type)

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
    app.router.add_post("/v1/traces", post_traces)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/openapi.json", openapi_view)
    app.on_cleanup.append(stop_decoders)
    return app
