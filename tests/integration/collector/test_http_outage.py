"""Broker outage through the HTTP service: 100,000 events in batches of 1,000, the broker
stopped after 20,000 were accepted and started again; every event_id arrives exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from collector.auth import TokenAuth, hash_token
from collector.server import ServiceConfig

from .conftest import delivery, running_service, scrape, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "gw-token-outage"
BATCH = 1000


async def post_all(
    http: aiohttp.ClientSession, url: str, batches: list[bytes], concurrency: int = 4
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
    queue = list(reversed(batches))

    async def worker() -> None:
        while queue:
            body = queue.pop()
            async with http.post(f"{url}/v1/events", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json()) == {
                    "accepted": BATCH,
                    "rejected": [],
                    "rejected_count": 0,
                    "rejected_truncated": False,
                }

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def test_http_broker_outage_loses_nothing_and_duplicates_nothing(
    own_broker: Any, topics: dict[str, str], tmp_path: Path, event_factory: Any
) -> None:
    events = [event_factory() for _ in range(100_000)]
    batches = [
        b"\n".join(orjson.dumps(e) for e in events[i : i + BATCH])
        for i in range(0, len(events), BATCH)
    ]
    config = ServiceConfig(
        bootstrap_servers=own_broker.bootstrap,
        spool_dir=tmp_path / "spool",
        auth=TokenAuth([hash_token(TOKEN)]),
        port=0,
        emitter_options={"stall_timeout_s": 2.0},
        **topics,
    )
    async with running_service(config) as url, aiohttp.ClientSession() as http:
        await post_all(http, url, batches[:20])
        assert (await scrape(http, url))["telemetry_emitter_events_sent_total"] == 20_000
        await asyncio.to_thread(own_broker.stop)
        await post_all(http, url, batches[20:60])
        during = await scrape(http, url)
        await asyncio.to_thread(own_broker.start)

        async def reconnected() -> bool:
            return (await scrape(http, url))["telemetry_emitter_broker_up"] == 1

        await wait_until(reconnected, timeout=60, what="the service to reconnect")
        spooled_before_rest = (await scrape(http, url))["telemetry_emitter_events_spooled_total"]
        await post_all(http, url, batches[60:])  # while the spool is replayed

        async def settled() -> bool:
            m = await scrape(http, url)
            return (
                m["telemetry_emitter_broker_up"] == 1
                and m["telemetry_emitter_spool_records"] == 0
                and m["telemetry_emitter_in_flight"] == 0
            )

        await wait_until(settled, timeout=180, what="the spool to be replayed")
        final = await scrape(http, url)
    got = await delivery(own_broker.bootstrap, topics["topic"], events)
    print(
        f"\nhttp outage: {got.events} events in {got.records} records, "
        f"{got.duplicates} duplicates, "
        f"{len(got.missing)} missing; "
        f"{during['telemetry_emitter_spool_records']:.0f} in the spool during the outage, "
        f"{final['telemetry_emitter_events_replayed_total']:.0f} replayed"
    )
    assert not got.missing
    assert during["telemetry_emitter_spool_records"] > 0
    assert final["telemetry_emitter_events_dropped_total"] == 0
    assert got.duplicates == 0
    assert final["telemetry_emitter_events_spooled_total"] == spooled_before_rest
