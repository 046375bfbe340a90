"""The sender's packing: events of a partition in few NDJSON Kafka records, every fate once.

The producer is a stand-in that builds aiokafka's real ``BatchBuilder``s and
hands back futures the test resolves; what the sender shipped is read back from
the built batch bytes, as a broker would see them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

import collector.sender as sender_module
from collector.encoding import Record, encode_record
from collector.metrics import EmitterMetrics
from collector.sender import KafkaSender
from schemas.codec import validate_event
from schemas.event_record import MAX_RECORD_BYTES, RECORD_HEADERS, pack_lines, partition_for

EV, DLQ = "ev", "dlq"
PARTITIONS = 4
MODELS = ["openai/gpt-4.1-mini", "anthropic/claude-sonnet-4", "meta/llama-3.3-70b", "x/y"]


@dataclass
class Shipped:
    """One producer batch as the broker would receive it, and its pending acknowledgement."""

    topic: str
    partition: int
    records: list[Any]  # aiokafka DefaultRecord: .key, .value, .headers
    future: asyncio.Future[Any]

    def lines(self) -> list[bytes]:
        return [line for r in self.records for line in r.value.split(b"\n")]


class FakeProducer:
    def __init__(self, *, max_batch_size: int, **_: Any) -> None:
        self.batch_size = max_batch_size
        self.shipped: list[Shipped] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        records = list(DefaultRecordBatch(bytes(batch._build())))
        self.shipped.append(Shipped(topic, partition, records, future))
        return future


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    made: list[FakeProducer] = []

    def factory(**kw: Any) -> FakeProducer:
        made.append(FakeProducer(**kw))
        return made[-1]

    monkeypatch.setattr(sender_module, "AIOKafkaProducer", factory)
    return made


async def connected(
    undelivered: list[Record], **producer_options: Any
) -> tuple[KafkaSender, EmitterMetrics]:
    metrics = EmitterMetrics()
    sender = KafkaSender(
        bootstrap_servers="fake:9092",
        metrics=metrics,
        on_undelivered=undelivered.extend,
        events_topic=EV,
        producer_options=producer_options,
    )
    assert await sender.connect()
    return sender, metrics


def events(event_factory: Any, n: int, models: list[str] = MODELS) -> list[Record]:
    return [
        encode_record(validate_event(event_factory(model=models[i % len(models)])), EV)
        for i in range(n)
    ]


def part_of(model: str) -> int:
    return partition_for(model.encode(), PARTITIONS)


def count(metrics: EmitterMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(f"telemetry_emitter_{name}_total") or 0.0


def ack(shipped: list[Shipped]) -> None:
    for s in shipped:
        s.future.set_result(None)


async def test_events_of_a_partition_go_in_one_record_with_headers(
    producers: list[FakeProducer], event_factory: Any
) -> None:
    undelivered: list[Record] = []
    sender, metrics = await connected(undelivered)
    evs = events(event_factory, 400)
    dead = [(DLQ, b"", b'{"reason": "one"}'), (DLQ, b"", b'{"reason": "two"}')]
    futures = await sender.send(evs + dead)
    shipped = producers[0].shipped
    on_ev = [s for s in shipped if s.topic == EV]
    # One Kafka record per partition that has events; MODELS cover more than one partition.
    used = {part_of(m) for m in MODELS}
    assert len(used) > 1
    assert sorted(s.partition for s in on_ev) == sorted(used)
    for s in on_ev:
        (record,) = s.records
        assert record.key is None
        assert list(record.headers) == RECORD_HEADERS
        # Exactly this partition's events, each model's in the order given.
        want = [v for _, k, v in evs if part_of(k.decode()) == s.partition]
        assert Counter(s.lines()) == Counter(want)
        for model in MODELS:
            mine = [v for _, k, v in evs if k == model.encode()]
            if part_of(model) == s.partition:
                assert [line for line in s.lines() if line in set(mine)] == mine
    # Dead letters: one plain record each, with their key, unchanged.
    on_dlq = [r for s in shipped if s.topic == DLQ for r in s.records]
    assert [(r.key, r.value, list(r.headers)) for r in on_dlq] == [
        (b"", b'{"reason": "one"}', []),
        (b"", b'{"reason": "two"}', []),
    ]
    assert sender.in_flight == 402
    ack(shipped)
    assert sum(await asyncio.gather(*futures)) == 402
    assert count(metrics, "events_sent") == 400
    assert count(metrics, "dead_letters_sent") == 2
    assert sender.in_flight == 0
    assert undelivered == []


@pytest.mark.parametrize(
    ("batch_size", "batches"),
    [(512 * 1024, 3), (4 * 1024 * 1024, 1)],
    ids=["a-batch-per-record", "records-share-a-batch"],
)
async def test_a_partition_over_the_size_bound_is_split_into_full_records(
    producers: list[FakeProducer], event_factory: Any, batch_size: int, batches: int
) -> None:
    undelivered: list[Record] = []
    sender, metrics = await connected(undelivered, max_batch_size=batch_size)
    evs = events(event_factory, 7_000, models=[MODELS[0]])
    values = [v for _, _, v in evs]
    assert 2 * MAX_RECORD_BYTES < sum(len(v) + 1 for v in values) < 3 * MAX_RECORD_BYTES
    futures = await sender.send(evs)
    shipped = producers[0].shipped
    records = [r for s in shipped for r in s.records]
    assert len(records) == 3 == len(list(pack_lines(values)))
    assert len(shipped) == len(futures) == batches
    assert all(s.partition == part_of(MODELS[0]) for s in shipped)
    assert all(len(r.value) <= MAX_RECORD_BYTES for r in records)
    # Full: each record but the last could not take the next event.
    taken = 0
    for r in records[:-1]:
        taken += r.value.count(b"\n") + 1
        assert len(r.value) + 1 + len(values[taken]) > MAX_RECORD_BYTES
    assert [line for s in shipped for line in s.lines()] == values  # one partition: in order
    ack(shipped)
    assert await asyncio.gather(*futures) == [len(s.lines()) for s in shipped]
    assert count(metrics, "events_sent") == 7_000
    assert undelivered == []


async def test_every_record_is_acknowledged_or_handed_back_exactly_once(
    producers: list[FakeProducer], event_factory: Any
) -> None:
    undelivered: list[Record] = []
    sender, metrics = await connected(undelivered)
    first = events(event_factory, 8_000)  # 3 partitions, one of them over a record's bound
    futures = await sender.send(first)
    shipped = producers[0].shipped
    assert len(shipped) == 4 and sender.healthy
    acked, failed, pending = shipped[0:2], shipped[2:3], shipped[3:]
    ack(acked)
    for s in failed:
        s.future.set_exception(KafkaConnectionError("broker gone"))
    await asyncio.sleep(0)  # the done callbacks run
    assert not sender.healthy  # a failed batch: callers spool from now on
    # What the failed batch carried was handed back, as the input records, once.
    assert Counter(undelivered) == Counter(
        rec for s in failed for rec in first if rec[2] in set(s.lines())
    )
    later = events(event_factory, 10)
    assert await sender.send(later) == []  # unhealthy: straight back
    assert undelivered[-10:] == later
    # Closing hands back what is still in flight; a late answer changes nothing.
    await sender.close(timeout=0)
    ack(pending)
    await asyncio.sleep(0)
    results = await asyncio.gather(*futures)
    acked_lines = [line for s in acked for line in s.lines()]
    assert sum(results) == len(acked_lines) == count(metrics, "events_sent")
    assert results[: len(acked)] == [len(s.lines()) for s in acked]
    assert all(n == 0 for n in results[len(acked) :])
    # Every input record: acknowledged or handed back, never both, never twice.
    handed_back = Counter(undelivered)
    assert all(n == 1 for n in handed_back.values())
    everything = Counter(first + later)
    assert handed_back + Counter(r for r in first if r[2] in set(acked_lines)) == everything
    assert sender.in_flight == 0
    assert count(metrics, "batch_failures") == 1
