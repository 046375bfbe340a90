"""The Kafka pipeline: events to the events topic; workers fold them, the sink stores them.

Ingest validates lines here and sends the valid events as batch records (one
producer session), the first ``MAX_REJECTS_KEPT`` rejected lines to the
dead-letter topic. The simulator's door is the same producer behind the
``Handoff`` seam. Reads never refresh: the workers publish the stats. What
waits is the lag of the workers' and the sink's consumer groups.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from schemas.settings import Settings
from telemetry.pipeline import Backlog, Ingest, Ingested, LagRow

if TYPE_CHECKING:
    from collector.handoff import Handoff, Rejected
    from processors.clickhouse import ClickHouse
    from processors.embedded.ingest import IngestReport
    from processors.kafka_io import EventProducer
    from schemas.event import RequestEvent
    from telemetry.service.control import ControlClient

__all__ = ["SINK_GROUP", "KafkaPipeline", "ProducerHandoff", "TopicDoor"]

#: The sink's consumer group (``processors.sinks.kafka_sink.run_sink``'s default).
SINK_GROUP = "telemetry-sink"
#: Rejected lines quoted in an ingest's summary.
_SAMPLES = 20


class ProducerHandoff:
    """A ``Handoff`` on one open producer session: returns once the broker has acked."""

    def __init__(self, producer: EventProducer, topic: str, dlq_topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.dlq_topic = dlq_topic

    async def hand_over(self, events: Sequence[RequestEvent]) -> None:
        await self.producer.send(self.topic, events)

    async def dead_letter(self, items: Sequence[Rejected]) -> None:
        await self.producer.send(
            self.topic, [], dlq_topic=self.dlq_topic, rejects=[r.to_dlq() for r in items]
        )

    def retry_after(self) -> float | None:
        return None  # each call waits for its acks: nothing piles up behind it

    def ready(self) -> bool:
        return True


class TopicDoor:
    """The events topic as the simulator's target: topics ensured, one producer session."""

    def __init__(self, settings: Settings, broker: str) -> None:
        self.settings = settings
        self.broker = broker
        self.description = f"{settings.topic} at {broker}"

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Handoff]:
        from processors.kafka_io import EventProducer, ensure_topics

        s = self.settings
        await ensure_topics(
            self.broker,
            [s.topic, s.dlq_topic],
            partitions=s.partitions,
            replication_factor=s.replication_factor,
        )
        async with EventProducer(self.broker) as producer:
            yield ProducerHandoff(producer, s.topic, s.dlq_topic)


class KafkaPipeline:
    mode = "kafka"

    def __init__(self, settings: Settings, broker: str) -> None:
        self.settings = settings
        self.broker = broker
        self.where = f"Kafka at {broker}"
        self.dead_letters = settings.dlq_topic

    def open_ingest(self) -> Ingest:
        return self._ingest

    def _ingest(
        self,
        chunks: Iterable[bytes],
        *,
        source: str,
        on_batch: Callable[[IngestReport], None] | None = None,
    ) -> Ingested:
        """Valid events to the events topic; the first ``MAX_REJECTS_KEPT`` rejects to the DLQ."""
        from processors.embedded.ingest import (
            DEFAULT_BATCH,
            MAX_REJECTS_KEPT,
            IngestReport,
            validate_lines,
        )
        from processors.kafka_io import EventProducer, dlq_record, ensure_topics
        from schemas.codec import iter_ndjson

        settings = self.settings
        bootstrap = self.broker
        report = IngestReport()

        async def run() -> None:
            await ensure_topics(
                bootstrap,
                [settings.topic, settings.dlq_topic],
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
            )
            batch: list[tuple[int, bytes]] = []

            async def flush(producer: EventProducer) -> None:
                room = MAX_REJECTS_KEPT - report.rejected_kept
                good, bad, lines, bad_count = validate_lines(batch, source=source, keep=room)
                dlq = [
                    dlq_record(
                        source=r.source,
                        location=r.location,
                        field=r.field,
                        reason=r.reason,
                        raw=r.raw,
                    )
                    for r in bad
                ]
                await producer.send(settings.topic, good, dlq_topic=settings.dlq_topic, rejects=dlq)
                report.accepted += len(good)
                report.rejected += bad_count
                report.rejected_kept += len(bad)
                room = _SAMPLES - len(report.rejected_samples)
                report.rejected_samples.extend(
                    (n, r.reason) for n, r in zip(lines[:room], bad[:room], strict=True)
                )
                batch.clear()
                if on_batch is not None:
                    on_batch(report)

            async with EventProducer(bootstrap) as producer:
                for numbered in iter_ndjson(chunks):
                    batch.append(numbered)
                    if len(batch) >= DEFAULT_BATCH:
                        await flush(producer)
                await flush(producer)

        asyncio.run(run())
        return Ingested(report, detail=f"sent to {settings.topic} at {bootstrap}")

    def topic_door(self) -> TopicDoor:
        return TopicDoor(self.settings, self.broker)

    def refreshes(self, reader: object) -> TypeGuard[ClickHouse]:
        return False  # the workers publish the stats

    def backlog(self) -> Backlog:
        """The workers' lag per events partition, the sink's per topic, the DLQ's records.

        Raises ``OperationalError`` when the broker does not answer.
        """
        from processors.kafka_offsets import read_offsets

        s = self.settings
        bootstrap = self.broker

        async def read() -> tuple[list[Any], list[Any]]:
            topics = [s.topic, s.dlq_topic, s.stats_topic, s.hourly_topic]
            worker = await read_offsets(bootstrap, [s.topic], group=s.worker_id)
            sink = await read_offsets(bootstrap, topics, group=SINK_GROUP)
            return worker, sink

        worker, sink = asyncio.run(read())
        backlog = Backlog()
        for o in worker:
            backlog.lag.append(LagRow("worker", o.topic, o.partition, o.lag, o.end, o.committed))
        per_topic: dict[str, int] = {}
        for o in sink:
            per_topic[o.topic] = per_topic.get(o.topic, 0) + o.lag
        for topic, lag in per_topic.items():
            backlog.lag.append(LagRow("sink", topic, None, lag))
        backlog.dead_letters = sum(o.held for o in sink if o.topic == s.dlq_topic)
        return backlog

    def store_backlog(self, reader: ClickHouse | ControlClient) -> Backlog:
        return Backlog()  # the sink's lag says what has yet to reach the store
