"""Broker outage: 100,000 events, the broker stopped after 20,000 and started again.

Every event_id must be in the topic; duplicates are counted and must be zero.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from collector import TelemetryEmitter

from .conftest import delivery, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

log = logging.getLogger(__name__)

TOTAL = 100_000
BEFORE_STOP = 20_000
DURING_OUTAGE = 40_000


async def emit_range(emitter: TelemetryEmitter, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 1000):
        for e in events[i : i + 1000]:
            emitter.emit(e)
        await asyncio.sleep(0)  # a gateway's loop runs other work between requests


async def test_broker_outage_loses_nothing_and_duplicates_nothing(
    own_broker: Any, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    events = [event_factory() for _ in range(TOTAL)]
    emitter = TelemetryEmitter(
        bootstrap_servers=own_broker.bootstrap,
        spool_dir=tmp_path / "spool",
        stall_timeout_s=2.0,
        **topics,
    )
    await emitter.start()
    try:
        await emit_range(emitter, events[:BEFORE_STOP])
        await wait_for(
            lambda: emitter.counter("events_sent") >= BEFORE_STOP,
            timeout=60,
            what="the first 20,000 events to be acknowledged",
        )
        await asyncio.to_thread(own_broker.stop)
        await emit_range(emitter, events[BEFORE_STOP : BEFORE_STOP + DURING_OUTAGE])
        await wait_for(
            lambda: not emitter.connected and emitter.spool.pending_records > 0,
            timeout=60,
            what="the emitter to notice the outage and spool",
        )
        await wait_for(
            lambda: emitter.buffered == 0,
            timeout=60,
            what="the buffer to drain into the spool during the outage",
        )
        spooled_during_outage = emitter.spool.pending_records
        await asyncio.to_thread(own_broker.start)
        await wait_for(lambda: emitter.connected, timeout=60, what="the emitter to reconnect")
        spooled_before_rest = emitter.counter("events_spooled")
        # New events flow straight to Kafka while the spool is replayed.
        await emit_range(emitter, events[BEFORE_STOP + DURING_OUTAGE :])
        await wait_for(
            lambda: (
                emitter.connected
                and emitter.spool.pending_records == 0
                and emitter.buffered == 0
                and emitter.in_flight == 0
            ),
            timeout=180,
            what="the spool to be replayed after the broker came back",
        )
    finally:
        await emitter.close()
    got = await delivery(own_broker.bootstrap, topics["topic"], events)
    print(
        f"\noutage: {got.events} events in {got.records} records, {got.unique} unique, "
        f"{got.duplicates} duplicates, "
        f"{len(got.missing)} missing; {spooled_during_outage} spooled during the outage, "
        f"{emitter.counter('events_replayed'):.0f} replayed, "
        f"{emitter.counter('batch_failures'):.0f} failed batches"
    )
    assert not got.missing
    assert emitter.counter("events_dropped") == 0
    assert spooled_during_outage > 0
    assert got.duplicates == 0
    # the events emitted after the reconnection were sent, not spooled
    assert emitter.counter("events_spooled") == spooled_before_rest
