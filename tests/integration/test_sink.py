"""The sink under a ClickHouse outage: it pauses, keeps the batch, and commits nothing early;
and its reading of batch records (docs/record-format.md), a bad line rejected on its own.

The outage is injected in front of the real engine (inserts fail with the
error a dead server gives) so that what is tested is the sink's behaviour;
the rows that do get written go to the real ClickHouse.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pipeline_util import as_events, settings_for, synthetic_events

from processors.kafka_io import ensure_topics, produce_events
from processors.sinks.kafka_sink import SinkCounters, run_sink
from schemas.errors import OperationalError
from schemas.event_record import RECORD_HEADERS

pytestmark = pytest.mark.integration


class Outage:
    """Delegates to the real ClickHouse, but inserts fail while ``down``."""

    def __init__(self, ch: Any) -> None:
        self._ch = ch
        self.down = True
        self.refused = 0

    def insert(self, *args: Any, **kwargs: Any) -> int:
        if self.down:
            self.refused += 1
            raise OperationalError("ClickHouse unavailable during INSERT: connection refused")
        return self._ch.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if self.down and name in ("query", "command"):

            def refuse(*_: Any, **__: Any) -> Any:
                self.refused += 1
                raise OperationalError("ClickHouse unavailable: connection refused")

            return refuse
        return getattr(self._ch, name)


async def _until(cond: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_outage_pauses_and_loses_nothing(
    kafka_bootstrap: str, clickhouse: Any, topic_prefix: str
) -> None:
    settings = settings_for(topic_prefix)
    docs = synthetic_events(5_000, seed=51)
    await ensure_topics(kafka_bootstrap, [settings.topic], partitions=4)
    await produce_events(kafka_bootstrap, settings.topic, as_events(docs))
    group = f"{topic_prefix}-sink"

    # First sink: ClickHouse is down the whole time; it retries, then is stopped.
    flaky = Outage(clickhouse)
    stop = asyncio.Event()
    first = SinkCounters()
    task = asyncio.create_task(
        run_sink(
            settings, flaky, bootstrap=kafka_bootstrap, group_id=group, stop=stop, counters=first
        )  # type: ignore[arg-type]
    )
    await _until(lambda: first.retries >= 3, 60, "three failed attempts")
    stop.set()
    await asyncio.wait_for(task, 60)
    assert clickhouse.query("SELECT count() FROM telemetry.requests")[0][0] == 0
    assert first.events_stored == 0 and first.last_error is not None

    # Second sink, same group: nothing was committed, so every event is still there.
    flaky2 = Outage(clickhouse)
    stop2 = asyncio.Event()
    second = SinkCounters()
    task2 = asyncio.create_task(
        run_sink(
            settings, flaky2, bootstrap=kafka_bootstrap, group_id=group, stop=stop2, counters=second
        )  # type: ignore[arg-type]
    )
    await _until(lambda: second.retries >= 2, 60, "the outage to be noticed")
    flaky2.down = False  # the server is back
    await _until(lambda: second.events_seen >= len(docs), 120, "every event after the outage")
    stop2.set()
    await asyncio.wait_for(task2, 60)
    got = clickhouse.query("SELECT count(), uniqExact(event_id) FROM telemetry.requests")[0]
    assert got == (len(docs), len(docs))
    assert second.last_error is None


async def test_batch_records_are_read_line_by_line(
    kafka_bootstrap: str, clickhouse: Any, topic_prefix: str
) -> None:
    """Our producers' batch records, a hand-made one with bad lines among good ones, and a
    third party's one-event record keyed by model: every valid event is stored, every bad
    line is rejected with its record's offset and its line."""
    from aiokafka import AIOKafkaProducer

    settings = settings_for(topic_prefix)
    await ensure_topics(kafka_bootstrap, [settings.topic], partitions=4)
    docs = synthetic_events(3_000, seed=52)
    await produce_events(kafka_bootstrap, settings.topic, as_events(docs[:2_990]))
    mixed = [orjson.dumps(d) for d in docs[2_990:2_995]]
    mixed.insert(2, orjson.dumps({**docs[0], "event_id": "not-a-uuid"}))
    mixed.insert(4, b"{torn")
    single = docs[2_995]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        meta = await (
            await producer.send(
                settings.topic, b"\n".join(mixed), partition=3, headers=RECORD_HEADERS
            )
        )
        await (await producer.send(settings.topic, orjson.dumps(single), key=b"third/party"))
        for d in docs[2_996:]:  # more one-event records, as plain as a third party makes them
            await (await producer.send(settings.topic, orjson.dumps(d), key=d["model"].encode()))
    finally:
        await producer.stop()

    stop = asyncio.Event()
    counters = SinkCounters()
    task = asyncio.create_task(
        run_sink(
            settings,
            clickhouse,
            bootstrap=kafka_bootstrap,
            group_id=f"{topic_prefix}-sink",
            stop=stop,
            counters=counters,
        )
    )
    await _until(lambda: counters.events_seen >= len(docs), 120, "every valid event")
    stop.set()
    await asyncio.wait_for(task, 60)
    got = clickhouse.query("SELECT count(), uniqExact(event_id) FROM telemetry.requests")[0]
    assert got == (len(docs), len(docs))
    assert counters.rejected == 2
    rows = clickhouse.query("SELECT location, field FROM telemetry.rejected ORDER BY location")
    where = f"partition 3 offset {meta.offset}"
    assert rows == [(f"{where} line 3", "event_id"), (f"{where} line 5", "$")]


async def test_dead_letters_of_every_form_land_in_rejected(
    kafka_bootstrap: str, clickhouse: Any, topic_prefix: str
) -> None:
    """The one dead-letter format (schemas/dead_letter.py) from each producer, the two older
    forms still on a topic, and a record of an unknown format: each becomes one row of
    telemetry.rejected, read without guessing; the unknown one is kept whole, redacted."""
    from aiokafka import AIOKafkaProducer

    from collector.encoding import dead_letter_value
    from processors.kafka_io import dlq_record

    settings = settings_for(topic_prefix)
    await ensure_topics(kafka_bootstrap, [settings.dlq_topic], partitions=1)
    values = [
        dead_letter_value(source="http:t@h", index=3, field="ts", reason="ts: r1", raw=b"{}"),
        dlq_record(source="ingest:f", location="line 9", field="$", reason="$: r2", raw=b"x"),
        orjson.dumps({"source": "http:old", "index": 5, "field": "ts", "reason": "ts: r3"}),
        orjson.dumps({"source": "ingest:old", "location": "line 2", "field": "$", "reason": "r4"}),
        orjson.dumps({"format": "someone-else.v3", "prompt": "secret words"}),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in values:
            await (await producer.send(settings.dlq_topic, value))
    finally:
        await producer.stop()
    stop = asyncio.Event()
    counters = SinkCounters()
    task = asyncio.create_task(
        run_sink(
            settings,
            clickhouse,
            bootstrap=kafka_bootstrap,
            group_id=f"{topic_prefix}-sink",
            stop=stop,
            counters=counters,
        )
    )
    await _until(lambda: counters.rejected >= len(values), 120, "every dead letter")
    stop.set()
    await asyncio.wait_for(task, 60)
    rows = clickhouse.query(
        "SELECT source, location, field, reason, raw FROM telemetry.rejected ORDER BY reason"
    )
    assert [r[:4] for r in rows[:4]] == [
        ("ingest:f", "line 9", "$", "$: r2"),
        ("ingest:old", "line 2", "$", "r4"),
        ("http:t@h", "index 3", "ts", "ts: r1"),
        ("http:old", "index 5", "ts", "ts: r3"),
    ]
    unknown = rows[4]
    assert unknown[1:3] == ("dead-letter", "$")
    assert unknown[3].startswith("unreadable dead-letter record: format 'someone-else.v3'")
    assert "secret words" not in unknown[4]
