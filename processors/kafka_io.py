"""Small Kafka helpers shared by commands and processors: producing events, topic admin.

Events go out as batch records (docs/record-format.md, ``schemas.event_record``):
the events of one partition packed into NDJSON values, sent to that partition
explicitly, with ``RECORD_HEADERS``. Dead letters stay one record each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from itertools import islice

from collector.topics import ensure_topics, unreachable
from schemas.codec import encode_event
from schemas.dead_letter import encode_dead_letter
from schemas.event import RequestEvent
from schemas.event_record import RECORD_HEADERS, pack_lines, partition_for

__all__ = ["EventProducer", "dlq_record", "ensure_topics", "produce_events", "unreachable"]

#: Events grouped and packed per round: each partition's share of a round becomes as
#: few records as fit (``MAX_RECORD_BYTES`` each), and a round's acks are awaited
#: before the next, so memory stays bounded whatever the caller hands over.
_ROUND = 50_000


def dlq_record(*, source: str, location: str, field: str, reason: str, raw: bytes) -> bytes:
    """The dead-letter message for a rejected line: ``schemas.dead_letter``'s one format.

    Only the redacted form of ``raw`` is sent: a rejected line may carry
    prompt text, which must not outlive the request.
    """
    return encode_dead_letter(source=source, location=location, field=field, reason=reason, raw=raw)


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
        """Send events as batch records (and rejects to ``dlq_topic``); wait for every ack.

        Each event goes to the partition a producer keyed by model would pick;
        the events of one partition are packed into NDJSON records with
        ``RECORD_HEADERS`` and no key. Returns the number of events sent.
        """
        producer = self._producer
        parts = sorted(await producer.partitions_for(topic))
        # The partition of each model, computed once per call.
        placed: dict[str, int] = {}
        sent = 0
        it = iter(events)
        while chunk := list(islice(it, _ROUND)):
            by_partition: dict[int, list[bytes]] = {}
            for e in chunk:
                part = placed.get(e.model)
                if part is None:
                    part = placed[e.model] = parts[partition_for(e.model.encode(), len(parts))]
                lines = by_partition.get(part)
                if lines is None:
                    lines = by_partition[part] = []
                lines.append(encode_event(e))
            futures = []
            for part, lines in by_partition.items():
                for value in pack_lines(lines):
                    futures.append(
                        await producer.send(topic, value, partition=part, headers=RECORD_HEADERS)
                    )
            await asyncio.gather(*futures)
            sent += len(chunk)
        if dlq_topic:
            futures = [await producer.send(dlq_topic, raw) for raw in rejects]
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
