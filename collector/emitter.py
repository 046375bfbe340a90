"""``TelemetryEmitter``: the front class a gateway embeds.

It wires three parts, each testable alone: an ``EventBuffer`` (memory), a
``KafkaSender`` (network) and a ``Spool`` (disk). ``emit()`` only appends to
the buffer; a background *pump* task validates, encodes and sends; a
*supervisor* task keeps the fsync policy, notices a stalled broker, reconnects,
and starts the *replay* of the spool when Kafka delivers again.

Where an event can be at any moment, and what happens to it:

- in the buffer: drained by the pump; past the buffer's bound, ``emit()``
  writes it to the spool itself (synchronously) instead;
- in the producer: acknowledged (counted as sent), or handed back and spooled;
- in the spool: replayed oldest first once Kafka delivers; a segment is deleted
  only after every record of it was acknowledged or re-spooled.

Invalid events are counted, logged (rate limited) and written to the
dead-letter topic; they never raise into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from collector.buffer import EventBuffer
from collector.encoding import (
    Record,
    encode_record,
    events_in,
    pack_events,
    raw_bytes,
    unpacked,
)
from collector.exceptions import BacklogFull, SpoolUnavailable
from collector.metrics import EmitterMetrics
from collector.sender import KafkaSender
from collector.spool import DEFAULT_FSYNC_INTERVAL_S, DEFAULT_MAX_BYTES, Spool
from schemas.batch import pack_values_fast
from schemas.batch_docs import encode_docs
from schemas.codec import validate_event
from schemas.dead_letter import encode_dead_letter
from schemas.errors import InvalidEvent
from schemas.event import RequestEvent
from schemas.settings import DEFAULT_TOPIC, DLQ_TOPIC
from schemas.valid_events import ValidEvents

__all__ = ["DEFAULT_BUFFER_SIZE", "TelemetryEmitter"]

log = logging.getLogger(__name__)

DEFAULT_BUFFER_SIZE = 100_000
DEFAULT_DRAIN = 50_000
DEFAULT_CLOSE_TIMEOUT_S = 10.0
_REPLAY_CHUNK = 5_000
#: Dicts per call of the batch validator: large enough that its fixed costs vanish,
#: small enough that its working set stays in cache (measured: 1,000-2,000 per call
#: cost less CPU per event than 50,000).
_VALIDATE_CHUNK = 2_000
_TICK_S = 0.1


class _Throttled:
    """Log at most one line per interval; the next line says how many were skipped."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval = interval_s
        self._next = 0.0
        self._skipped = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        self._next = now + self._interval
        skipped, self._skipped = self._skipped, 0
        if skipped:
            msg += " (%d similar messages suppressed)"
            args = (*args, skipped)
        log.warning(msg, *args)


class TelemetryEmitter:
    """Sends request events to Kafka without ever blocking or losing them.

    ``async with TelemetryEmitter(bootstrap_servers=..., spool_dir=...) as emitter:``
    then ``emitter.emit(event)`` from any thread. See ``docs/collector.md``.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        spool_dir: str | os.PathLike[str],
        topic: str = DEFAULT_TOPIC,
        dlq_topic: str = DLQ_TOPIC,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_segment_bytes: int | None = None,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
        stall_timeout_s: float = 3.0,
        abandon_timeout_s: float | None = None,
        connect_timeout_s: float = 5.0,
        max_backlog: int | None = None,
        client_id: str = "telemetry-emitter",
        registry: CollectorRegistry | None = None,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
            raise ValueError("bootstrap_servers must be a non-empty 'host:port[,host:port]' string")
        if not topic or not dlq_topic or topic == dlq_topic:
            raise ValueError("topic and dlq_topic must be non-empty and different")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if stall_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("stall_timeout_s and connect_timeout_s must be > 0")
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.client_id = client_id
        self.metrics = EmitterMetrics(registry)
        self._buffer = EventBuffer(buffer_size)
        self._max_backlog = max_backlog if max_backlog is not None else buffer_size
        self._spool = Spool(
            Path(spool_dir),
            max_bytes=spool_max_bytes,
            segment_bytes=spool_segment_bytes,
            fsync_interval_s=fsync_interval_s,
            on_spooled=self.metrics.spooled.inc,
            on_dropped=self.metrics.dropped.inc,
        )
        self._sender = KafkaSender(
            bootstrap_servers=bootstrap_servers,
            metrics=self.metrics,
            on_undelivered=self._undelivered,
            events_topic=topic,
            client_id=client_id,
            stall_timeout_s=stall_timeout_s,
            abandon_timeout_s=abandon_timeout_s,
            connect_timeout_s=connect_timeout_s,
            producer_options=producer_options,
        )
        self.metrics.bind(
            buffer_depth=lambda: len(self._buffer),
            in_flight=lambda: self._sender.in_flight,
            spool_bytes=lambda: self._spool.pending_bytes,
            spool_records=lambda: self._spool.pending_records,
            broker_up=lambda: 1.0 if self._sender.healthy else 0.0,
            spool_max_bytes=spool_max_bytes,
        )
        self._log_invalid = _Throttled()
        #: model -> its UTF-8 bytes, the records' key (a few hundred models at most)
        self._model_keys: dict[str, bytes] = {}
        self._started = False
        self._closed = False
        self._closing = False
        self._stop_replay = False
        self._pump_task: asyncio.Task[None] | None = None
        self._supervisor_task: asyncio.Task[None] | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._recover_task: asyncio.Task[bool] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TelemetryEmitter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the spool and connect; an unreachable broker is not an error (we spool)."""
        if self._closed:
            raise RuntimeError("this TelemetryEmitter was closed; make a new one")
        if self._started:
            return
        loop = asyncio.get_running_loop()
        self._spool.open()
        self._buffer.bind(loop)
        self._started = True
        if not await self._sender.connect():
            log.warning("Kafka unreachable at start: events go to the spool until it answers")
        self._pump_task = loop.create_task(self._pump(), name="telemetry-emitter-pump")
        self._supervisor_task = loop.create_task(
            self._supervise(), name="telemetry-emitter-supervisor"
        )

    async def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Flush within ``timeout`` seconds (buffer, in-flight batches, then the spool);
        whatever is not acknowledged by then stays in the spool for the next start."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            self._spool_leftovers_unstarted()
            return
        deadline = time.monotonic() + timeout
        self._closing = True
        self._buffer.wake()
        pump = self._pump_task
        if pump is not None:
            done, _ = await asyncio.wait([pump], timeout=max(deadline - time.monotonic(), 0))
            if not done:
                self._sender.healthy = False  # spool the rest, quickly
                self._buffer.wake()
                await asyncio.wait([pump], timeout=self._sender_stall_bound())
        # Replay what the spool holds while there is time and Kafka delivers.
        while self._sender.healthy and self._spool.pending_records and time.monotonic() < deadline:
            before = self._spool.pending_records
            task = self._replay_task
            if task is None or task.done():
                task = self._replay_task = asyncio.get_running_loop().create_task(self._replay())
            await asyncio.wait([task], timeout=max(deadline - time.monotonic(), 0))
            if task.done() and self._spool.pending_records >= before:
                break  # no progress: leave the rest for the next start
        self._stop_replay = True
        await self._sender.close(max(deadline - time.monotonic(), 0.0))
        for t in (self._replay_task, self._pump_task):
            if t is not None and not t.done():
                await asyncio.wait([t], timeout=self._sender_stall_bound())
        background: list[asyncio.Task[Any]] = [
            t for t in (self._supervisor_task, self._recover_task) if t is not None
        ]
        for bg in background:
            if not bg.done():
                bg.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await bg
        leftovers = self._buffer.take(len(self._buffer))
        if leftovers:
            self._spool_records(self._encode(leftovers), sync=True)
        self._spool.close()

    def _sender_stall_bound(self) -> float:
        return 2 * self._sender._stall_timeout_s + 1.0

    def _spool_leftovers_unstarted(self) -> None:
        items = self._buffer.take(len(self._buffer))
        if not items:
            return
        self._spool.open()
        try:
            self._spool_records(self._encode(items), sync=True)
        finally:
            self._spool.close()

    def __del__(self) -> None:
        if getattr(self, "_started", False) and not getattr(self, "_closed", True):
            warnings.warn(
                f"TelemetryEmitter {self.client_id!r} was never closed: "
                "events still in memory were not flushed",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    # ------------------------------------------------------------------ request path

    def emit(self, event: RequestEvent | dict[str, Any]) -> None:
        """Queue one event. Never blocks on the network, never raises; any thread."""
        if self._closed:
            self._emit_after_close(event)
        elif not self._buffer.put(event):
            self._overflow(event)

    def _overflow(self, event: Any) -> None:
        """The buffer is full: write this event to the spool from the caller's thread."""
        try:
            records = self._encode([event])
            if self._spool.is_open:
                self._spool_records(records)
            else:
                self.metrics.dropped.inc(events_in(records))
                log.error("buffer full before start(): event dropped")
        except Exception:  # never into the request handler
            self.metrics.dropped.inc()
            log.exception("emit(): could not spool an event past the buffer bound")

    def _emit_after_close(self, event: Any) -> None:
        self.metrics.dropped.inc()
        self._log_invalid.warning("emit() after close(): event dropped")

    # ------------------------------------------------------------------ awaited hand-over

    async def deliver(self, events: Sequence[RequestEvent]) -> None:
        """Send validated events; return once each is acknowledged by Kafka or in the spool.

        ``ValidEvents`` (the HTTP door's) are sent as their encoded lines, with no
        event object built.
        """
        topic = self.topic
        if isinstance(events, ValidEvents):
            keys = self._model_keys
            for model in set(events.models).difference(keys):
                keys[model] = model.encode()
            records: list[Record] = list(
                zip(repeat(topic), map(keys.__getitem__, events.models), events.lines)
            )
        else:
            records = [encode_record(e, topic) for e in events]
        self.metrics.emitted.inc(len(records))
        await self.hand_over_records(records)

    async def dead_letter(self, values: Sequence[bytes], *, key: bytes = b"") -> None:
        """Write dead-letter documents; same durability as ``deliver``."""
        await self.hand_over_records([(self.dlq_topic, key, v) for v in values])

    async def hand_over_records(self, records: list[Record]) -> None:
        if not self._started or self._closing:
            raise RuntimeError("the emitter is not running")
        if not records:
            return
        if not self._sender.healthy:
            # raises SpoolUnavailable: the caller says 503
            self._spool.append(unpacked(records), sync=True)
            return
        # Shielded: a cancelled caller (client gone) must not cut a send in half.
        task = asyncio.ensure_future(self._send_and_wait(records))
        await asyncio.shield(task)

    async def _send_and_wait(self, records: list[Record]) -> None:
        futures = await self._sender.send(records)
        if futures:
            await asyncio.gather(*futures)

    def backlog_retry_after(self) -> float | None:
        """Seconds a client should wait before sending more, or None when there is room."""
        if len(self._buffer) + self._sender.in_flight > self._max_backlog:
            return 1.0
        if self._spool.pending_bytes > 0.9 * self._spool.max_bytes:
            return 30.0
        return None

    def check_backlog(self) -> None:
        retry = self.backlog_retry_after()
        if retry is not None:
            raise BacklogFull("backlog past its bound", retry_after=retry)

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True while the producer delivers."""
        return self._sender.healthy

    @property
    def spool_writable(self) -> bool:
        return self._spool.is_open and self._spool.pending_bytes < self._spool.max_bytes

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def in_flight(self) -> int:
        return self._sender.in_flight

    def counter(self, name: str) -> float:
        """A counter's total by short name (``sent``, ``spooled``, ...), for tests and benches."""
        value = self.metrics.registry.get_sample_value(f"telemetry_emitter_{name}_total")
        return value or 0.0

    # ------------------------------------------------------------------ background

    def _encode(self, items: Sequence[Any]) -> list[Record]:
        """Validate and encode what ``emit()`` took, in order, as records.

        A ``RequestEvent`` is valid by construction and only encoded. A plain
        dict is validated and encoded in one batch (``schemas.batch_docs.encode_docs``:
        msgspec over the batch in compiled code, pydantic-core over what it refuses,
        the same rules and reasons as the model, the bytes of ``encode_event``);
        anything else, and a batch the validators choke on,
        is judged by the model one item at a time.

        A chunk of only events, or of only dicts all valid as they are, comes out
        as one record per model carrying its events (``pack_events``,
        ``_pack_dicts``): the sender would pack them so anyway, and a ``bytes``
        per event plus the join that undoes it cost more than the validation.
        Records are in order within a model, which is the order Kafka keeps.
        """
        topic = self.topic
        kinds = set(map(type, items))  # one pass in C
        if kinds == {RequestEvent}:  # valid by construction: packed per model
            records = []
            for start in range(0, len(items), _VALIDATE_CHUNK):
                records.extend(pack_events(items[start : start + _VALIDATE_CHUNK], topic))
            self.metrics.emitted.inc(len(items))
            return records
        if kinds == {dict}:  # the usual batch: no merging
            docs: list[Any] = items if isinstance(items, list) else list(items)
            out: list[Any] = []
            invalid = 0
            for start in range(0, len(docs), _VALIDATE_CHUNK):
                part = docs[start : start + _VALIDATE_CHUNK]
                packed = self._pack_dicts(part)
                if packed is not None:
                    out.extend(packed)
                    continue
                chunk: list[Any] = [None] * len(part)
                invalid += self._encode_dicts(part, range(len(part)), chunk)
                out.extend(chunk)
        else:
            out = [None] * len(items)
            docs, at, odd = [], [], []
            for i, item in enumerate(items):
                if type(item) is RequestEvent:
                    out[i] = encode_record(item, topic)
                elif type(item) is dict:
                    docs.append(item)
                    at.append(i)
                else:  # not a plain dict (a Mapping, a subclass, garbage): the model judges it
                    odd.append(i)
            invalid = self._encode_one_by_one([items[i] for i in odd], odd, out) if odd else 0
            for start in range(0, len(docs), _VALIDATE_CHUNK):
                end = start + _VALIDATE_CHUNK
                invalid += self._encode_dicts(docs[start:end], at[start:end], out)
        self.metrics.emitted.inc(len(items) - invalid)
        if invalid:
            self.metrics.invalid.inc(invalid)
        return out

    def _pack_dicts(self, docs: list[Any]) -> list[Record] | None:
        """Dicts all valid as they are: a record per model carrying its events; else None.

        ``schemas.batch.pack_values_fast``: the same checks and bytes as
        ``encode_docs``, packed per model as the sender would pack them anyway
        (docs/record-format.md), so no ``bytes`` object is made per event.
        Kafka keeps the order within a model. None (the batch holds an invalid
        event, or one the model must judge): ``_encode_dicts`` says why.
        """
        try:
            packed = pack_values_fast(docs, now=datetime.now(UTC))
        except Exception:  # the per-event path judges it
            return None
        if packed is None:
            return None
        keys = self._model_keys
        topic = self.topic
        records: list[Record] = []
        for model, value in packed:
            key = keys.get(model)
            if key is None:
                key = keys[model] = model.encode()
            records.append((topic, key, value))
        return records

    def _encode_dicts(self, docs: list[Any], at: Sequence[int], out: list[Any]) -> int:
        """Dicts validated and encoded in one batch into ``out[at[k]]``; returns the invalid."""
        topic = self.topic
        try:
            batch = encode_docs(docs)
        except Exception:  # a value the validators choke on: judge each on its own
            return self._encode_one_by_one(docs, at, out)
        keys = self._model_keys
        for model in set(batch.model).difference(keys):
            keys[model] = model.encode()
        records = zip(repeat(topic), map(keys.__getitem__, batch.model), batch.lines)
        if not batch.rejects and type(at) is range and len(at) == len(out):
            out[at.start : at.stop] = records  # every doc valid, in order: built in C
        else:
            for k, record in zip(batch.index, records, strict=False):
                out[at[k]] = record
        for k, exc in batch.rejects:
            out[at[k]] = self._reject(docs[k], exc.field, exc.rule)
        return len(batch.rejects)

    def _encode_one_by_one(self, docs: list[Any], at: Sequence[int], out: list[Any]) -> int:
        """The model on each item; an item it cannot even judge is rejected as such."""
        invalid = 0
        for k, item in enumerate(docs):
            try:
                out[at[k]] = encode_record(validate_event(item), self.topic)
                continue
            except InvalidEvent as exc:
                field, rule = exc.field, exc.rule
            except Exception as exc:
                field, rule = "$", f"cannot be validated: {exc!r}"
            invalid += 1
            out[at[k]] = self._reject(item, field, rule)
        return invalid

    def _reject(self, item: Any, field: str, rule: str) -> Record:
        self._log_invalid.warning("invalid event not sent (the gateway's bug): %s: %s", field, rule)
        value = encode_dead_letter(
            source=f"emitter:{self.client_id}",
            location="emit()",
            field=field,
            reason=f"{field}: {rule}",
            raw=raw_bytes(item),
        )
        return (self.dlq_topic, b"", value)

    def _undelivered(self, records: list[Record]) -> None:
        self._spool_records(records, sync=True)

    def _spool_records(self, records: list[Record], *, sync: bool = False) -> None:
        """Into the spool one record per event (its counts and bounds are per event)."""
        records = unpacked(records)
        try:
            self._spool.append(records, sync=sync)
        except SpoolUnavailable as exc:
            self.metrics.dropped.inc(len(records))
            log.error("spool unavailable, %d events dropped: %s", len(records), exc)

    async def _pump(self) -> None:
        buf = self._buffer
        sender = self._sender
        while True:
            if not len(buf):
                if self._closing:
                    return
                await buf.wait(0.5)
                continue
            records = self._encode(buf.take(DEFAULT_DRAIN))
            try:
                if sender.healthy:
                    await sender.send(records)
                else:
                    self._spool_records(records)
            except Exception:
                log.exception("emitter pump: unexpected error; spooling the batch")
                self._spool_records(records, sync=True)

    async def _supervise(self) -> None:
        backoff = 0.2
        next_attempt = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_TICK_S)
            try:
                self._spool.sync_if_due()
                sender = self._sender
                sender.check_stall()
                now = time.monotonic()
                recovering = self._recover_task is not None and not self._recover_task.done()
                if not sender.healthy and not recovering and now >= next_attempt:
                    if self._recover_task is not None and self._recover_task.done():
                        ok = not self._recover_task.cancelled() and self._recover_task.result()
                        backoff = 0.2 if ok else min(backoff * 2, 5.0)
                    next_attempt = now + backoff
                    self._recover_task = loop.create_task(sender.recover())
                replaying = self._replay_task is not None and not self._replay_task.done()
                if (
                    sender.healthy
                    and not replaying
                    and not self._stop_replay
                    and self._spool.pending_records
                ):
                    self._replay_task = loop.create_task(self._replay(), name="telemetry-replay")
            except Exception:
                log.exception("emitter supervisor: unexpected error")

    async def _replay(self) -> None:
        """Send spooled segments, oldest first, while Kafka delivers."""
        sender = self._sender
        while sender.healthy and not self._stop_replay:
            seg = self._spool.claim()
            if seg is None:
                return
            records = self._spool.read(seg)
            shipped = 0
            futures: list[asyncio.Future[int]] = []
            try:
                while shipped < len(records) and sender.healthy and not self._stop_replay:
                    chunk = records[shipped : shipped + _REPLAY_CHUNK]
                    futures.extend(await sender.send(chunk))
                    shipped += len(chunk)
            finally:
                if shipped < len(records):
                    # Not handed to the producer: back into the spool before the segment goes.
                    self._spool_records(records[shipped:], sync=True)
            acked = sum(await asyncio.gather(*futures)) if futures else 0
            self.metrics.replayed.inc(acked)
            # Every record is now acknowledged or spooled again: the segment may go.
            self._spool.release(seg, done=True)
            if acked:
                log.info("replayed %d spooled records from %s", acked, seg.path.name)
