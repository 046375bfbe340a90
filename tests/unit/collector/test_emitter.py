"""The emitter without a broker: it spools, never raises, validates its arguments."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from uuid import uuid4

import orjson
import pytest

import collector.emitter as emitter_module
from collector import TelemetryEmitter
from collector.spool import Spool
from schemas.codec import encode_event, validate_event
from schemas.dead_letter import decode_dead_letter
from schemas.errors import InvalidEvent

NOWHERE = "127.0.0.1:1"  # nothing listens there: connection refused at once


def make(tmp_path: Path, **kw: Any) -> TelemetryEmitter:
    kw.setdefault("connect_timeout_s", 1.0)
    return TelemetryEmitter(bootstrap_servers=NOWHERE, spool_dir=tmp_path / "spool", **kw)


def spooled(tmp_path: Path) -> list[tuple[str, bytes, bytes]]:
    spool = Spool(tmp_path / "spool")
    spool.open()
    out = []
    while (seg := spool.claim()) is not None:
        out.extend(spool.read(seg))
        spool.release(seg, done=True)
    spool.close()
    return out


async def test_unreachable_broker_spools_everything(tmp_path: Path, event_factory: Any) -> None:
    events = [event_factory() for _ in range(500)]
    async with make(tmp_path, topic="ev", dlq_topic="dlq") as emitter:
        assert not emitter.connected
        for e in events:
            emitter.emit(e)
        emitter.emit(validate_event(event_factory()))
        async with asyncio.timeout(10):
            while emitter.counter("events_spooled") < 501:
                await asyncio.sleep(0.01)
    records = spooled(tmp_path)
    assert len(records) == 501
    assert {r[0] for r in records} == {"ev"}
    assert records[0][2] == encode_event(validate_event(events[0]))
    assert records[0][1] == b"openai/gpt-4.1-mini"


def test_a_chunk_of_valid_dicts_becomes_one_record_per_model(
    tmp_path: Path, event_factory: Any
) -> None:
    """The pump's encoding of valid dicts: packed per model; with one invalid, per event."""
    models = ["a/one", "b/two", "c/three"]
    events = [event_factory(model=models[i % 3]) for i in range(900)]
    emitter = make(tmp_path, topic="ev", dlq_topic="dlq")
    records = emitter._encode(events)
    assert sorted(r[1] for r in records) == sorted(m.encode() for m in models)
    for topic, key, value in records:
        assert topic == "ev"
        assert value.split(b"\n") == [
            encode_event(validate_event(e)) for e in events if e["model"].encode() == key
        ]
    events[400]["status"] = "maybe"
    records = emitter._encode(events)
    assert len(records) == 900
    assert records[400][0] == "dlq"
    assert emitter.counter("events_invalid") == 1


async def test_packed_dicts_are_spooled_one_record_per_event(
    tmp_path: Path, event_factory: Any
) -> None:
    """Valid dicts travel packed per model; what reaches the spool is one record each."""
    models = ["a/one", "b/two", "c/three"]
    events = [event_factory(model=models[i % 3]) for i in range(4_500)]  # > one chunk
    async with make(tmp_path, topic="ev", dlq_topic="dlq") as emitter:
        for e in events:
            emitter.emit(e)
        async with asyncio.timeout(10):
            while emitter.counter("events_spooled") < len(events):
                await asyncio.sleep(0.01)
        assert emitter.spool.pending_records == len(events)
    assert emitter.counter("events_spooled") == len(events)
    records = spooled(tmp_path)
    assert len(records) == len(events)
    for model in models:
        mine = [e for e in events if e["model"] == model]
        assert [r[2] for r in records if r[1] == model.encode()] == [
            encode_event(validate_event(e)) for e in mine
        ]


async def test_invalid_events_are_counted_dead_lettered_and_never_raise(
    tmp_path: Path, event_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emitter = make(tmp_path, topic="ev", dlq_topic="dlq")
    await emitter.start()
    for bad in ({}, "text", None, 42, event_factory(ttft_ms=-3), {"event_id": object()}):
        emitter.emit(bad)  # type: ignore[arg-type]
    emitter.emit(event_factory())
    await emitter.close()
    assert emitter.counter("events_invalid") == 6
    assert emitter.counter("events_emitted") == 1
    records = spooled(tmp_path)
    dlq = [orjson.loads(r[2]) for r in records if r[0] == "dlq"]
    assert len(dlq) == 6
    assert {d["field"] for d in dlq} >= {"$", "ttft_ms"}
    assert all(d["source"].startswith("emitter:") for d in dlq)
    assert "invalid event" in caplog.text


async def test_emit_from_many_threads(tmp_path: Path, event_factory: Any) -> None:
    emitter = make(tmp_path, buffer_size=1_000_000)
    await emitter.start()
    events = [event_factory() for _ in range(4000)]

    def run(part: list[dict[str, Any]]) -> None:
        for e in part:
            emitter.emit(e)

    threads = [threading.Thread(target=run, args=(events[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    await emitter.close()
    ids = {orjson.loads(r[2])["event_id"] for r in spooled(tmp_path)}
    assert ids == {e["event_id"] for e in events}


async def test_buffer_overflow_goes_to_the_spool_from_the_caller(
    tmp_path: Path, event_factory: Any
) -> None:
    emitter = make(tmp_path, buffer_size=10)
    await emitter.start()
    for _ in range(200):  # no await: the pump cannot run, the buffer overflows
        emitter.emit(event_factory())
    assert emitter.counter("events_spooled") >= 190
    await emitter.close()
    assert len(spooled(tmp_path)) == 200
    assert emitter.counter("events_dropped") == 0


async def test_start_and_close_are_idempotent(tmp_path: Path) -> None:
    emitter = make(tmp_path)
    await emitter.start()
    await emitter.start()
    await emitter.close()
    await emitter.close()
    with pytest.raises(RuntimeError):
        await emitter.start()
    emitter.emit({})  # after close: counted as dropped, never raised
    assert emitter.counter("events_dropped") == 1


async def test_close_before_start_keeps_buffered_events(tmp_path: Path, event_factory: Any) -> None:
    emitter = make(tmp_path)
    emitter.emit(event_factory())
    await emitter.close()
    assert len(spooled(tmp_path)) == 1


async def test_unclosed_emitter_warns(tmp_path: Path) -> None:
    emitter = make(tmp_path)
    await emitter.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emitter.__del__()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    await emitter.close()
    del emitter
    gc.collect()


def test_constructor_validates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bootstrap_servers"):
        TelemetryEmitter(bootstrap_servers="", spool_dir=tmp_path)
    with pytest.raises(ValueError, match="buffer_size"):
        make(tmp_path, buffer_size=0)
    with pytest.raises(ValueError, match="topic"):
        make(tmp_path, topic="a", dlq_topic="a")
    with pytest.raises(ValueError, match="idempotence"):
        make(tmp_path, producer_options={"acks": 1})


async def test_deliver_returns_once_spooled(tmp_path: Path, event_factory: Any) -> None:
    emitter = make(tmp_path)
    await emitter.start()
    events = [validate_event(event_factory()) for _ in range(10)]
    await emitter.deliver(events)
    assert emitter.spool.pending_records == 10  # durable before deliver() returned
    await emitter.close()


# The pump validates dicts in batches (schemas.batch.encode_docs): invalid dicts at the
# chunk boundaries, Python objects the model accepts (datetime, UUID), a Mapping that
# is not a dict and RequestEvents in one drain; every item keeps the fate it has alone.
async def test_each_emitted_item_has_the_fate_it_has_alone(
    tmp_path: Path, event_factory: Any
) -> None:
    chunk = emitter_module._VALIDATE_CHUNK
    items: list[Any] = [event_factory() for _ in range(2 * chunk + 20)]
    for at in (0, chunk - 1, chunk, 2 * chunk - 1, 2 * chunk):
        items[at] = event_factory(ttft_ms=9e9)
    items[5] = event_factory(event_id=uuid4(), ts=datetime.now(UTC))  # objects: valid
    items[6] = event_factory(ts=datetime.now(UTC).replace(tzinfo=None))  # naive: invalid
    items[7] = event_factory(latency_ms=float("nan"))
    items[8] = MappingProxyType(event_factory())  # not a dict: the model says so
    items[9] = validate_event(event_factory())
    items[10] = "text"
    async with make(tmp_path, topic="ev", dlq_topic="dlq") as emitter:
        for item in items:
            emitter.emit(item)
    want_lines: list[bytes] = []
    want_bad: list[tuple[str, str]] = []
    for item in items:
        try:
            want_lines.append(encode_event(validate_event(item)))
        except InvalidEvent as exc:
            want_bad.append((exc.field, exc.reason))
    records = spooled(tmp_path)
    assert [r[2] for r in records if r[0] == "ev"] == want_lines
    letters = [decode_dead_letter(r[2]) for r in records if r[0] == "dlq"]
    assert [(d.field, d.reason) for d in letters] == want_bad
    assert {(d.location, d.source) for d in letters} == {("emit()", "emitter:telemetry-emitter")}
    assert emitter.counter("events_invalid") == len(want_bad) == 9
    assert emitter.counter("events_emitted") == len(want_lines)


def test_the_spool_bound_is_exported(tmp_path: Path) -> None:
    em = TelemetryEmitter(
        bootstrap_servers=NOWHERE, spool_dir=tmp_path / "spool", spool_max_bytes=1 << 20
    )
    assert em.metrics.registry.get_sample_value("telemetry_emitter_spool_max_bytes") == 1 << 20
