"""The gap reader while no broker answers: it waits and retries, quietly, until closed.

Nothing listens on the port these tests use (a real refused connection, no
mock); the reader reading through a broker restart is in
tests/integration/test_broker_restart.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    TopicAuthorizationFailedError,
)

from processors.worker import gap_reader
from processors.worker.gap_reader import GapReader, GapReaderClosed, GapReadTimeout, retriable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_what_waiting_can_cure() -> None:
    for exc in (
        KafkaConnectionError("refused"),
        NodeNotReadyError(),
        KafkaTimeoutError(),
        TimeoutError(),
        ConnectionRefusedError(),
        GapReadTimeout("stalled"),
    ):
        assert retriable(exc), exc
    for exc in (MessageSizeTooLargeError(), TopicAuthorizationFailedError(), ValueError()):
        assert not retriable(exc), exc


async def test_waits_for_the_broker_until_closed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gap_reader, "BACKOFF_MAX_S", 0.2)  # many attempts in little time
    reader = GapReader(f"127.0.0.1:{_closed_port()}", "t")
    caplog.set_level(logging.WARNING, logger=gap_reader.__name__)
    # The agent's call, and one queued behind it (calls take turns).
    calls = [
        asyncio.create_task(reader.read(1, 10, 20)),
        asyncio.create_task(reader.log_start(0)),
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while "gap reader:" not in caplog.text and loop.time() < deadline:
        assert not any(call.done() for call in calls), [c.exception() for c in calls if c.done()]
        await asyncio.sleep(0.05)
    assert caplog.text.count("gap reader:") == 1, caplog.text  # when the outage starts
    assert "reading partition 1 offsets 10..19 failed (KafkaConnectionError" in caplog.text
    watching = loop.time()
    while loop.time() - watching < 1.5:  # several more attempts (0.2 s apart at most)
        assert not any(call.done() for call in calls)  # waiting, not failing
        await asyncio.sleep(0.05)
    # Bounded noise: no line per attempt (the next is due after 30 s).
    assert caplog.text.count("gap reader:") == 1, caplog.text
    await reader.close()
    for call in calls:
        with pytest.raises(GapReaderClosed):
            await asyncio.wait_for(call, 10)
    assert issubclass(GapReaderClosed, asyncio.CancelledError)  # the agent ends as if cancelled


async def test_a_call_after_close_starts_afresh() -> None:
    reader = GapReader(f"127.0.0.1:{_closed_port()}", "t")
    await reader.close()
    call = asyncio.create_task(reader.log_start(0))
    await asyncio.sleep(0.3)
    assert not call.done()  # retrying, not refused as closed
    await reader.close()
    with pytest.raises(GapReaderClosed):
        await asyncio.wait_for(call, 10)
