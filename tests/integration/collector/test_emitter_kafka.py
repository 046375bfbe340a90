"""The emitter on a real broker: every event once, in its model's partition, in batch
records (docs/record-format.md), invalid ones dead-lettered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from collector import TelemetryEmitter
from schemas.codec import encode_event, validate_event
from schemas.event_record import MAX_RECORD_BYTES, RECORD_HEADERS, partition_for

from .conftest import read_events, read_topic, wait_for

pytestmark = pytest.mark.integration


async def test_events_arrive_once_in_their_models_partition(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    models = ["openai/gpt-4.1-mini", "anthropic/claude-sonnet-4", "meta/llama-3.3-70b"]
    events = [event_factory(model=models[i % 3]) for i in range(5000)]
    async with TelemetryEmitter(
        bootstrap_servers=kafka_bootstrap, spool_dir=tmp_path, **topics
    ) as emitter:
        assert emitter.connected
        for i, e in enumerate(events):
            emitter.emit(e if i % 2 else validate_event(e))
            if i % 500 == 0:
                await asyncio.sleep(0)
        emitter.emit({**event_factory(), "status": "maybe"})
        emitter.emit({"not": "an event"})
    assert emitter.counter("events_sent") == 5000
    assert emitter.counter("events_spooled") == 0
    assert emitter.counter("events_invalid") == 2
    got = await read_events(kafka_bootstrap, topics["topic"])
    assert len(got) == 5000
    by_id = {orjson.loads(e.value)["event_id"]: e for e in got}
    assert set(by_id) == {e["event_id"] for e in events}
    # Batch records: no key, our headers, within the size bound, far fewer than events.
    records = {(e.record.partition, e.record.offset): e.record for e in got}
    assert len(records) <= len(events) // 50
    for r in records.values():
        assert r.key is None
        assert list(r.headers) == RECORD_HEADERS
        assert len(r.value) <= MAX_RECORD_BYTES
    # Each event in the partition a model-keyed producer picks.
    probe = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await probe.start()
    try:
        parts = sorted(await probe.partitions_for(topics["topic"]))
    finally:
        await probe.stop()
    assert len(parts) > 1
    for e in got:
        model = orjson.loads(e.value)["model"]
        assert e.record.partition == parts[partition_for(model.encode(), len(parts))]
    assert len({e.record.partition for e in got}) > 1
    first = events[0]
    assert by_id[first["event_id"]].value == encode_event(validate_event(first))
    dlq = await read_topic(kafka_bootstrap, topics["dlq_topic"])
    assert all(not r.headers for r in dlq)  # dead letters stay one plain record each
    assert sorted(orjson.loads(r.value)["field"] for r in dlq) == ["event_id", "status"]


async def test_valid_dicts_travel_packed_and_are_counted_per_event(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    """The usual gateway: only valid dicts. They are packed per model before the sender
    (``schemas.batch.pack_values_fast``); counts stay per event, bytes stay the model's."""
    models = ["openai/gpt-4.1-mini", "anthropic/claude-sonnet-4", "meta/llama-3.3-70b"]
    events = [event_factory(model=models[i % 3]) for i in range(6000)]
    async with TelemetryEmitter(
        bootstrap_servers=kafka_bootstrap, spool_dir=tmp_path, **topics
    ) as emitter:
        for i in range(0, len(events), 1500):
            for e in events[i : i + 1500]:
                emitter.emit(e)
            await asyncio.sleep(0)
    assert emitter.counter("events_sent") == len(events)
    assert emitter.counter("events_emitted") == len(events)
    assert emitter.counter("events_spooled") == 0
    assert emitter.in_flight == 0
    got = await read_events(kafka_bootstrap, topics["topic"])
    assert sorted(e.value for e in got) == sorted(encode_event(validate_event(e)) for e in events)
    assert len({(e.record.partition, e.record.offset) for e in got}) <= len(events) // 500
    for model in models:  # Kafka keeps each model's order
        mine = [orjson.loads(e.value)["event_id"] for e in got if model.encode() in e.value]
        assert mine == [e["event_id"] for e in events if e["model"] == model]


async def test_spool_from_an_earlier_run_is_replayed_on_start(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    events = [event_factory() for _ in range(3000)]
    offline = TelemetryEmitter(
        bootstrap_servers="127.0.0.1:1", spool_dir=tmp_path, connect_timeout_s=1, **topics
    )
    async with offline:
        for e in events:
            offline.emit(e)
    assert offline.spool.pending_records == 3000
    online = TelemetryEmitter(bootstrap_servers=kafka_bootstrap, spool_dir=tmp_path, **topics)
    async with online:
        await wait_for(
            lambda: online.spool.pending_records == 0 and online.in_flight == 0,
            timeout=60,
            what="the spool to be replayed",
        )
    assert online.counter("events_replayed") == 3000
    ids = [
        orjson.loads(e.value)["event_id"]
        for e in await read_events(kafka_bootstrap, topics["topic"])
    ]
    assert sorted(ids) == sorted(e["event_id"] for e in events)
    assert not list(tmp_path.glob("*.seg"))
