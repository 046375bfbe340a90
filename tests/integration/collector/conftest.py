"""Helpers for the collector's broker tests: reading a topic to its end, a private broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kafka_broker import LocalKafka, port_pair_free, tooling_available

from schemas.event_record import record_lines

#: Ports this package's tests may give their own brokers (a broker takes port and port + 1).
OWN_BROKER_PORTS = range(19400, 19500, 2)


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    """A broker of this test alone, which it may stop and start; wiped at the end."""
    reason = tooling_available()
    if (
        reason is None
        and (port := next((p for p in OWN_BROKER_PORTS if port_pair_free(p)), None)) is None
    ):
        reason = "no free port pair in 19400-19499"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and there is no private broker: {reason}", pytrace=False)
        pytest.skip(f"no private broker: {reason}")
    broker = LocalKafka(port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(wipe=True)


@dataclass(frozen=True)
class Delivery:
    """What reached a topic, against the events that were sent."""

    events: int
    records: int
    unique: int
    duplicates: int
    missing: set[str]


@dataclass(frozen=True)
class TopicEvent:
    """One event of the events topic: its line, and the Kafka record that carries it."""

    record: Any
    index: int  # 0-based place in the record (docs/record-format.md)
    value: bytes


async def read_events(bootstrap: str, topic: str, *, timeout: float = 60.0) -> list[TopicEvent]:
    """Every event of the events topic ``topic``: each record split into its lines."""
    return [
        TopicEvent(r, i, line)
        for r in await read_topic(bootstrap, topic, timeout=timeout)
        for i, line in enumerate(record_lines(r.value, r.headers))
    ]


async def delivery(bootstrap: str, topic: str, sent: list[dict[str, Any]]) -> Delivery:
    """Read ``topic`` back and count the sent events' ids: none missing is the no-loss check."""
    records = await read_topic(bootstrap, topic, timeout=120)
    ids = [
        orjson.loads(line)["event_id"] for r in records for line in record_lines(r.value, r.headers)
    ]
    unique = set(ids)
    missing = {e["event_id"] for e in sent} - unique
    return Delivery(len(ids), len(records), len(unique), len(ids) - len(unique), missing)


async def read_topic(bootstrap: str, topic: str, *, timeout: float = 60.0) -> list[Any]:
    """Every record of ``topic``, from the beginning to the end offsets seen now."""
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        parts = sorted(await asyncio.wait_for(probe.partitions_for(topic), timeout))
    finally:
        await probe.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            tps = [TopicPartition(topic, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: list[Any] = []
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for msgs in batch.values():
                    out.extend(msgs)
            return out
    finally:
        await consumer.stop()


async def wait_for(predicate: Any, *, timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll a condition until it holds; fail naming it after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(poll)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for: {what}")


@pytest.fixture
def topics(topic_prefix: str) -> dict[str, str]:
    return {"topic": f"{topic_prefix}.requests", "dlq_topic": f"{topic_prefix}.dlq"}


@contextlib.asynccontextmanager
async def running_service(config: Any) -> AsyncIterator[str]:
    """``collector.server.serve`` in this process; yields its base URL."""
    from collector.server import serve

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    url: asyncio.Future[str] = loop.create_future()
    task = loop.create_task(serve(config, on_listening=url.set_result, stop=stop))
    done, _ = await asyncio.wait([task, url], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what went wrong
    assert url.done(), "the service did not start listening within 60 s"
    try:
        yield url.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 120)


async def scrape(session: Any, url: str) -> dict[str, float]:
    """Unlabelled samples of /metrics by name."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = sample.value
    return out


async def wait_until(check: Any, *, timeout: float, what: str, poll: float = 0.1) -> None:
    """Like ``wait_for`` for an async condition (e.g. a /metrics scrape)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(poll)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for: {what}")
