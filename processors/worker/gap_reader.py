"""Read a run of one partition's messages straight from Kafka, outside Faust.

When the offsets Faust delivers for a partition jump past the offset the
state expects (see processors/worker/fence.py), the events in between
reached the worker's consumer and were dropped by Faust, or were
committed over. Seeking Faust's consumer back does not work reliably:
messages it fetched before the seek keep arriving after it and raise its
read offset again, so the reread is dropped once more. So the worker reads
the missing run itself with a plain aiokafka consumer (no group, no
commits), from the expected offset up to the first delivered one, and
folds it before the rest of the batch.

Offsets the log no longer has (retention) or never had as events
(transaction markers) are simply absent from what comes back: the run
ends at the requested end offset all the same.

The broker may go away in the middle of a call (a restart, a network cut).
The reader then waits and tries again, with a fresh consumer and a growing
pause (0.5 s doubling to 10 s), and logs the outage once when it starts, at
most every 30 s while it lasts, and once when the broker answers again. A
run is never returned short: records already read are kept and the rest is
read on the next attempt. The reader gives up only when it is closed (the
worker is stopping): the pending call raises ``GapReaderClosed``, a kind of
``asyncio.CancelledError``, so the agent ends as it does when Faust cancels
it. Errors that waiting cannot cure (authorisation, a corrupt batch) are
raised: the agent crashes and the worker exits non-zero (crash-only; see
docs/deploy.md, "When the broker goes away").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError, KafkaTimeoutError

__all__ = ["GapReadTimeout", "GapReader", "GapReaderClosed", "retriable"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Pause after the first failed attempt; doubles up to ``BACKOFF_MAX_S``.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
#: While an outage lasts, one log line at most this often.
LOG_EVERY_S = 30.0
#: Longest wait for a consumer to stop (aiokafka can hang on a dead broker).
STOP_TIMEOUT_S = 5.0


class GapReadTimeout(RuntimeError):
    """The broker handed back no further offset of a run in time (retried, not raised)."""


class GapReaderClosed(asyncio.CancelledError):
    """The reader was closed while a call waited for the broker: the worker is stopping."""


def retriable(exc: BaseException) -> bool:
    """Whether waiting for the broker can cure ``exc`` (a connection, a timeout, a leader move)."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, TimeoutError | OSError | GapReadTimeout | ConsumerStoppedError)


class _Outage:
    """Bounded log lines for one call's run of failed attempts."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.attempts = 0
        self.logged_at = 0.0

    def failed(self, exc: BaseException, pause: float) -> None:
        now = time.monotonic()
        self.attempts += 1
        if self.since is None:
            self.since = self.logged_at = now
            log.warning(
                "gap reader: %s failed (%s: %s); retrying in %.1f s until the broker answers",
                self.what,
                type(exc).__name__,
                exc,
                pause,
            )
        elif now - self.logged_at >= LOG_EVERY_S:
            self.logged_at = now
            log.warning(
                "gap reader: %s still failing after %.0f s (%d attempts; last: %s: %s)",
                self.what,
                now - self.since,
                self.attempts,
                type(exc).__name__,
                exc,
            )

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning(
                "gap reader: %s done after the broker came back (%.0f s, %d failed attempts)",
                self.what,
                time.monotonic() - self.since,
                self.attempts,
            )


class GapReader:
    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        # Set by close(), then replaced: calls made after a close start afresh.
        self._closing = asyncio.Event()

    async def read(self, partition: int, start: int, end: int) -> list[Any]:
        """The records of ``partition`` with ``start <= offset < end``, in offset order."""
        tp = TopicPartition(self._topic, partition)
        out: list[Any] = []

        async def attempt(consumer: AIOKafkaConsumer) -> list[Any]:
            # After a failed attempt, go on from the last record kept.
            nxt = out[-1].offset + 1 if out else start
            consumer.assign([tp])
            consumer.seek(tp, nxt)
            reached = nxt
            stalled_after = time.monotonic() + self._timeout_s
            while True:
                position = await consumer.position(tp)
                if position >= end:
                    return out
                if position > reached:
                    reached, stalled_after = position, time.monotonic() + self._timeout_s
                elif time.monotonic() > stalled_after:
                    raise GapReadTimeout(f"no offset past {reached} within {self._timeout_s:.0f} s")
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
                for record in batch.get(tp, ()):
                    if nxt <= record.offset < end:
                        out.append(record)
                        nxt = record.offset + 1

        return await self._retrying(
            f"reading partition {partition} offsets {start}..{end - 1}", attempt
        )

    async def log_start(self, partition: int) -> int:
        """The partition's first offset the broker still has."""
        tp = TopicPartition(self._topic, partition)

        async def attempt(consumer: AIOKafkaConsumer) -> int:
            return int((await consumer.beginning_offsets([tp]))[tp])

        return await self._retrying(f"the log start of partition {partition}", attempt)

    async def log_end(self, partition: int) -> int:
        """The partition's end offset (the next offset to be written)."""
        tp = TopicPartition(self._topic, partition)

        async def attempt(consumer: AIOKafkaConsumer) -> int:
            return int((await consumer.end_offsets([tp]))[tp])

        return await self._retrying(f"the log end of partition {partition}", attempt)

    async def _retrying(self, what: str, attempt: Callable[[AIOKafkaConsumer], Awaitable[T]]) -> T:
        closing = self._closing
        outage = _Outage(what)
        pause = BACKOFF_FIRST_S
        async with self._lock:
            while True:
                if closing.is_set():
                    raise GapReaderClosed(f"gap reader closed while {what}")
                try:
                    result = await attempt(await self._ensure())
                except (
                    KafkaError,
                    OSError,
                    TimeoutError,
                    GapReadTimeout,
                    ConsumerStoppedError,
                ) as exc:
                    if closing.is_set():
                        raise GapReaderClosed(f"gap reader closed while {what}") from exc
                    if not retriable(exc):
                        raise
                    outage.failed(exc, pause)
                    # A fresh consumer next time: its metadata and connections are new.
                    await self._drop_consumer()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closing.wait(), timeout=pause)
                    pause = min(pause * 2, BACKOFF_MAX_S)
                    continue
                outage.succeeded()
                return result

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # below the log start: from the oldest kept
            )
            try:
                await consumer.start()
            except BaseException:
                await _stop_quietly(consumer)
                raise
            self._consumer = consumer
        return self._consumer

    async def _drop_consumer(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await _stop_quietly(consumer)

    async def close(self) -> None:
        """Stop the consumer; a call waiting for the broker raises ``GapReaderClosed``."""
        self._closing.set()
        self._closing = asyncio.Event()
        await self._drop_consumer()


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, bounded, and without the CancelledError aiokafka leaks.

    aiokafka 0.14's fetcher re-raises the cancellation of its own fetch task
    from ``stop()`` when that task was pausing after a failed fetch (a dead
    broker); that is not a cancellation of the caller, who only stops.
    """
    task = asyncio.ensure_future(consumer.stop())
    try:
        done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        log.warning("gap reader: consumer did not stop within %.0f s; left behind", STOP_TIMEOUT_S)
        return
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("gap reader: stopping the consumer failed: %s: %s", type(exc).__name__, exc)
