"""Small Kafka helpers shared by commands and processors: producing NDJSON, topic admin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import orjson

from schemas.codec import encode_event
from schemas.errors import OperationalError
from schemas.event import RequestEvent

__all__ = ["EventProducer", "dlq_record", "ensure_topics", "produce_events", "unreachable"]


def unreachable(bootstrap: str, exc: BaseException) -> OperationalError:
    return OperationalError(
        f"cannot reach Kafka at {bootstrap}: check TELEMETRY_KAFKA and that the broker is up "
        f"({type(exc).__name__})"
    )


def dlq_record(*, source: str, location: str, field: str, reason: str, raw: bytes) -> bytes:
    """The dead-letter message: the rejected bytes with where they came from and why."""
    return orjson.dumps(
        {
            "received_at": datetime.now(UTC).isoformat(),
            "source": source,
            "location": location,
            "field": field,
            "reason": reason,
            "raw": raw[: 16 * 1024].decode("utf-8", "replace"),
        }
    )


async def ensure_topics(
    bootstrap: str, topics: Sequence[str], *, partitions: int, replication_factor: int = 1
) -> None:
    """Create the topics if missing (idempotent), so keys spread over ``partitions``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise unreachable(bootstrap, exc) from None
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            t, num_partitions=partitions, replication_factor=replication_factor
                        )
                        for t in missing
                    ]
                )
    finally:
        await admin.close()


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
