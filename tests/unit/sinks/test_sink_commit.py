"""What the sink commits after a stored batch, and which Kafka errors it waits out."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    TopicAuthorizationFailedError,
)

from processors.sinks.kafka_sink import _curable, _next_offsets


def test_a_batch_commits_one_past_its_own_last_message_per_partition() -> None:
    a, b, c = (TopicPartition("t", p) for p in range(3))
    batch = {
        a: [SimpleNamespace(offset=o) for o in (7, 9, 8)],
        b: [SimpleNamespace(offset=0)],
        c: [],  # nothing read there: nothing to claim
    }
    # Never the consumer's position: only what this batch stored is claimed done.
    assert _next_offsets(batch) == {a: 10, b: 1}


def test_what_the_sink_waits_out() -> None:
    for exc in (KafkaConnectionError(), NodeNotReadyError(), KafkaTimeoutError(), OSError()):
        assert _curable(exc), exc
    # Waiting cannot cure these: the group moved on (handled by dropping the
    # commit), or the sink may not read (it exits non-zero).
    for exc in (CommitFailedError(), TopicAuthorizationFailedError(), ValueError()):
        assert not _curable(exc), exc
