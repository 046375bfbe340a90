"""Where simulated traffic goes: an NDJSON file, the events topic, or the HTTP ingest.

A target is ``start()``, ``send(batch)`` (buffers), ``flush()`` (delivers what
is buffered) and ``close()`` (flushes, returns a report). ``parse_target``
turns the ``--to`` flag into one and validates it before anything connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

from schemas.errors import ConfigError, OperationalError
from schemas.settings import Settings

if TYPE_CHECKING:
    from collector.handoff import Handoff

__all__ = [
    "HTTP_BATCH",
    "INGEST_TOKEN_ENV",
    "KAFKA_BATCH",
    "EventDoor",
    "FileTarget",
    "HttpTarget",
    "Target",
    "TargetReport",
    "TopicTarget",
    "encode_lines",
    "parse_target",
]

Event = dict[str, Any]

#: Events per POST to the HTTP ingest service.
HTTP_BATCH = 1_000
#: Events per hand-over through the events topic's door.
KAFKA_BATCH = 20_000
#: The bearer token the simulator presents to the HTTP ingest (the service keeps digests).
INGEST_TOKEN_ENV = "TELEMETRY_INGEST_TOKEN"
_HTTP_CONCURRENCY = 4
_HTTP_ATTEMPTS = 8
_SAMPLES = 5


def encode_lines(batch: Sequence[Event]) -> bytes:
    """NDJSON bytes, one event per line, each line ending in a newline.

    One ``orjson.dumps`` of the whole batch, split at the ``},{`` between
    events: about ten times cheaper than one call per event (each call costs a
    fresh output buffer). Events are flat, so ``},{`` only occurs between them
    unless a string holds it; the count check catches that and falls back.
    """
    if not batch:
        return b""
    data = orjson.dumps(batch)
    if data.count(b"},{") != len(batch) - 1:
        return b"\n".join(map(orjson.dumps, batch)) + b"\n"
    return data[1:-1].replace(b"},{", b"}\n{") + b"\n"


@dataclass(slots=True)
class TargetReport:
    target: str
    sent: int = 0
    accepted: int | None = None
    rejected: int | None = None
    rejected_samples: list[str] = field(default_factory=list)


class Target(Protocol):
    description: str

    async def start(self) -> None: ...

    async def send(self, batch: Sequence[Event]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> TargetReport: ...


class FileTarget:
    """NDJSON to a file (created or truncated) or, for ``-``, to stdout."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = "stdout" if path == "-" else path
        self._fh: IO[bytes] | None = None
        self._report = TargetReport(self.description)

    @property
    def to_stdout(self) -> bool:
        return self.path == "-"

    async def start(self) -> None:
        if self.to_stdout:
            self._fh = sys.stdout.buffer
            return
        try:
            self._fh = Path(self.path).open("wb")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise ConfigError(f"--to file:{self.path}: cannot write ({exc.strerror})") from None

    async def send(self, batch: Sequence[Event]) -> None:
        if self._fh is None:
            raise RuntimeError("FileTarget.send before start")
        try:
            self._fh.write(encode_lines(batch))
        except BrokenPipeError:
            raise OperationalError(f"{self.description}: the reader went away") from None
        self._report.sent += len(batch)

    async def flush(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(BrokenPipeError):
                self._fh.flush()

    async def close(self) -> TargetReport:
        await self.flush()
        if self._fh is not None and not self.to_stdout:
            self._fh.close()
        self._fh = None
        return self._report


class EventDoor(Protocol):
    """A pipeline's entrance for valid events: ``telemetry.pipeline`` opens the events topic's.

    ``open()`` yields a ``collector.handoff.Handoff`` (the HTTP door's seam)
    for the length of a run: the simulator plays a gateway and needs no more.
    """

    description: str

    def open(self) -> AbstractAsyncContextManager[Handoff]: ...


def _no_door(settings: Settings) -> EventDoor | None:
    return None


class TopicTarget:
    """The events topic (``TELEMETRY_KAFKA``, ``TELEMETRY_TOPIC``), through the pipeline's door.

    Events are validated into ``RequestEvent`` on the way (the handoff's input
    type), so a generator bug would fail loudly here rather than in a worker.
    """

    def __init__(self, door: EventDoor, *, batch: int = KAFKA_BATCH) -> None:
        self.door = door
        self.batch = batch
        self.description = door.description
        self._buffer: list[Event] = []
        self._report = TargetReport(self.description)
        self._session = contextlib.AsyncExitStack()
        self._handoff: Handoff | None = None

    async def start(self) -> None:
        self._handoff = await self._session.enter_async_context(self.door.open())

    async def send(self, batch: Sequence[Event]) -> None:
        self._buffer.extend(batch)
        if len(self._buffer) >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        from schemas.codec import validate_event

        while self._buffer:
            chunk = self._buffer[: self.batch]
            del self._buffer[: self.batch]
            events = [validate_event(e) for e in chunk]
            assert self._handoff is not None, "send() before start()"
            await self._handoff.hand_over(events)
            self._report.sent += len(events)

    async def close(self) -> TargetReport:
        try:
            await self.flush()
        finally:
            self._handoff = None
            await self._session.aclose()
        return self._report


def _events_url(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/events"):
        path += "/v1/events"
    return parts._replace(path=path).geturl()


class HttpTarget:
    """POST batches of NDJSON to the ingest service's ``/v1/events``.

    ``Authorization: Bearer $TELEMETRY_INGEST_TOKEN`` when that variable is set.
    Up to four requests in flight; 429 and 503 are retried after their
    ``Retry-After``; the service's accepted and rejected counts are summed.
    """

    def __init__(
        self, url: str, *, token: str | None = None, batch: int = HTTP_BATCH, timeout_s: float = 60
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--to {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.url = _events_url(url)
        self.description = self.url
        self.batch = batch
        self._headers = {"Content-Type": "application/x-ndjson"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout_s = timeout_s
        self._buffer: list[Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(_HTTP_CONCURRENCY)
        self._session: Any = None
        self._report = TargetReport(self.url, accepted=0, rejected=0)

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers=self._headers,
        )

    async def send(self, batch: Sequence[Event]) -> None:
        self._buffer.extend(batch)
        while len(self._buffer) >= self.batch:
            await self._post_next(self.batch)

    async def flush(self) -> None:
        while self._buffer:
            await self._post_next(self.batch)
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def close(self) -> TargetReport:
        try:
            await self.flush()
        finally:
            for task in self._tasks:
                task.cancel()
            if self._session is not None:
                await self._session.close()
                self._session = None
        return self._report

    async def _post_next(self, n: int) -> None:
        chunk = self._buffer[:n]
        del self._buffer[:n]
        await self._slots.acquire()
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            task.result()  # surface a failed POST now, not at the end
        task = asyncio.create_task(self._post(encode_lines(chunk), len(chunk)))
        self._tasks.add(task)

    async def _post(self, body: bytes, count: int) -> None:
        import aiohttp

        try:
            delay = 0.5
            for attempt in range(1, _HTTP_ATTEMPTS + 1):
                try:
                    async with self._session.post(self.url, data=body) as resp:
                        text = await resp.read()
                        if resp.status == 200:
                            self._count(orjson.loads(text), count)
                            return
                        if resp.status in (401, 403):
                            raise ConfigError(
                                f"{self.url} refused the token (HTTP {resp.status}): set "
                                f"{INGEST_TOKEN_ENV} to a token whose sha256 is in the "
                                "service's TELEMETRY_INGEST_TOKENS"
                            )
                        if resp.status not in (429, 502, 503, 504) or attempt == _HTTP_ATTEMPTS:
                            raise OperationalError(
                                f"{self.url} answered HTTP {resp.status}: "
                                f"{text[:300].decode('utf-8', 'replace')}"
                            )
                        retry_after = resp.headers.get("Retry-After", "")
                        wait = float(retry_after) if retry_after.isdigit() else delay
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    if attempt == _HTTP_ATTEMPTS:
                        raise OperationalError(
                            f"cannot reach {self.url}: {type(exc).__name__}"
                        ) from None
                    wait = delay
                await asyncio.sleep(min(wait, 30.0))
                delay = min(delay * 2, 10.0)
        finally:
            self._slots.release()

    def _count(self, doc: Any, count: int) -> None:
        report = self._report
        accepted = int(doc.get("accepted", 0)) if isinstance(doc, dict) else 0
        rejected = doc.get("rejected", []) if isinstance(doc, dict) else []
        report.sent += count
        report.accepted = (report.accepted or 0) + accepted
        # Past its first rejects the service only counts them (rejected_count).
        total = doc.get("rejected_count", len(rejected)) if isinstance(doc, dict) else 0
        report.rejected = (report.rejected or 0) + int(total)
        for item in rejected[: _SAMPLES - len(report.rejected_samples)]:
            report.rejected_samples.append(f"{item.get('field')}: {item.get('reason')}")


def parse_target(
    spec: str,
    settings: Settings,
    open_door: Callable[[Settings], EventDoor | None] = _no_door,
) -> FileTarget | TopicTarget | HttpTarget:
    """``file:PATH`` (``file:-`` = stdout), ``kafka``, or ``http(s)://HOST:PORT``.

    ``kafka`` goes through ``open_door(settings)``: the command passes the
    configured pipeline's (``telemetry.pipeline``); None means no broker.
    """
    if spec.startswith("file:"):
        path = spec[len("file:") :]
        if not path:
            raise ConfigError("--to file:PATH needs a path (file:- for stdout)")
        return FileTarget(path)
    if spec == "kafka":
        door = open_door(settings)
        if door is None:
            raise ConfigError("--to kafka needs a broker: set TELEMETRY_KAFKA (or --kafka)")
        return TopicTarget(door)
    if spec.startswith(("http://", "https://")):
        return HttpTarget(spec, token=os.environ.get(INGEST_TOKEN_ENV, "").strip() or None)
    raise ConfigError(
        f"--to {spec!r}: expected file:PATH (file:- for stdout), kafka, or http://HOST:PORT"
    )
