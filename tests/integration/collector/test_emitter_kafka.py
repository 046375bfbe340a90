"""The emitter on a real broker: every event once, keyed by model, invalid ones dead-lettered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import TelemetryEmitter
from schemas.codec import encode_event, validate_event

from .conftest import read_topic, wait_for

pytestmark = pytest.mark.integration


async def test_events_arrive_once_keyed_by_model(
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
    records = await read_topic(kafka_bootstrap, topics["topic"])
    assert len(records) == 5000
    by_id = {orjson.loads(r.value)["event_id"]: r for r in records}
    assert set(by_id) == {e["event_id"] for e in events}
    partition_of: dict[bytes, set[int]] = {}
    for r in records:
        assert r.key == orjson.loads(r.value)["model"].encode()
        partition_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partition_of.values())  # one model, one partition
    first = events[0]
    assert by_id[first["event_id"]].value == encode_event(validate_event(first))
    dlq = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, topics["dlq_topic"])]
    assert sorted(d["field"] for d in dlq) == ["event_id", "status"]


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
        orjson.loads(r.value)["event_id"]
        for r in await read_topic(kafka_bootstrap, topics["topic"])
    ]
    assert sorted(ids) == sorted(e["event_id"] for e in events)
    assert not list(tmp_path.glob("*.seg"))
