"""Small Kafka helpers shared by commands and processors: producing NDJSON, topic admin."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from collector.topics import ensure_topics, unreachable
from schemas.codec import encode_event
from schemas.event import RequestEvent
from schemas.redact import redact_rejected

__all__ = ["EventProducer", "dlq_record", "ensure_topics", "produce_events", "unreachable"]


def dlq_record(*, source: str, location: str, field: str, reason: str, raw: bytes) -> bytes:
    """The dead-letter message: the rejected input with where it came from and why.

    Only the redacted form of ``raw`` is sent (``schemas.redact``): a rejected
    line may carry prompt text, which must not outlive the request.
    """
    return orjson.dumps(
        {
            "received_at": datetime.now(UTC).isoformat(),
            "source": source,
            "location": location,
            "field": field,
            "reason": reason,
            "raw": redact_rejected(raw)[: 16 * 1024].decode("utf-8", "replace"),
        }
    )


class EventProducer:
    """One producer session (acks=all, idempotent) for many batches.

    Starting a producer costs a metadata round trip and a new idempotent
    producer id, so callers that send batch after batch keep one open.
    """

    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaProducer

        self.bootstrap = bootstrap
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            max_batch_size=256 * 1024,
            compression_type="lz4",
            request_timeout_ms=30_000,
        )

    async def start(self) -> None:
        from aiokafka.errors import KafkaConnectionError

        try:
            await self._producer.start()
        except KafkaConnectionError as exc:
            await self._producer.stop()
            raise unreachable(self.bootstrap, exc) from None

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(
        self,
        topic: str,
        events: Iterable[RequestEvent],
        *,
        dlq_topic: str | None = None,
        rejects: Iterable[bytes] = (),
    ) -> int:
        """Send events keyed by model (and rejects to ``dlq_topic``); wait for every ack."""
        producer = self._producer
        sent = 0
        futures = []
        for e in events:
            futures.append(await producer.send(topic, encode_event(e), key=e.model.encode()))
            sent += 1
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        if dlq_topic:
            for raw in rejects:
                futures.append(await producer.send(dlq_topic, raw))
        await asyncio.gather(*futures)
        return sent


async def produce_events(
    bootstrap: str,
    topic: str,
    events: Iterable[RequestEvent],
    *,
    dlq_topic: str | None = None,
    rejects: Iterable[bytes] = (),
) -> int:
    """One-shot: open a producer, send, wait for every ack, close."""
    async with EventProducer(bootstrap) as producer:
        return await producer.send(topic, events, dlq_topic=dlq_topic, rejects=rejects)
