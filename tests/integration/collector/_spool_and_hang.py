"""Subprocess for the SIGKILL test: emit events with no broker, report them spooled, hang.

usage: python _spool_and_hang.py EVENTS.ndjson SPOOL_DIR TOPIC DLQ_TOPIC
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from collector import TelemetryEmitter


async def main(events_file: str, spool_dir: str, topic: str, dlq_topic: str) -> None:
    with open(events_file, "rb") as f:
        events = [orjson.loads(line) for line in f if line.strip()]
    emitter = TelemetryEmitter(
        bootstrap_servers="127.0.0.1:1",  # nothing listens: every event goes to the spool
        spool_dir=spool_dir,
        topic=topic,
        dlq_topic=dlq_topic,
        connect_timeout_s=1.0,
        fsync_interval_s=3600,  # prove that SIGKILL needs no fsync: the kernel has the data
    )
    await emitter.start()
    for i, e in enumerate(events):
        emitter.emit(e)
        if i % 1000 == 0:
            await asyncio.sleep(0)
    while emitter.spool.pending_records < len(events):
        await asyncio.sleep(0.01)
    print(f"SPOOLED {emitter.spool.pending_records}", flush=True)
    await asyncio.Event().wait()  # hold them until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
