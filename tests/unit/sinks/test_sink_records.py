"""The sink's reading of the events topic: a record is a batch, each line judged on its own.

``_write_batch`` is fed aiokafka ``ConsumerRecord``s and writes into a stand-in
ClickHouse that keeps the inserted rows (no stored ids, so every valid event is new).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from pipeline_util import make_event

from processors.sinks.kafka_sink import SinkCounters, _write_batch
from schemas.event_record import RECORD_HEADERS
from schemas.settings import Settings

SETTINGS = Settings(topic="ev", dlq_topic="ev.dlq", stats_topic="st", hourly_topic="hr")
TP = TopicPartition("ev", 2)


class FakeClickHouse:
    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    def query(self, sql: str, parameters: Any = None) -> list[tuple[Any, ...]]:
        return []  # nothing stored yet

    def insert(self, table: str, rows: list[tuple[Any, ...]], columns: Any, **_: Any) -> int:
        self.rows[table].extend(rows)
        return len(rows)


def record(
    offset: int, value: bytes | None, headers: Any = RECORD_HEADERS, key: bytes | None = None
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TP.topic,
        partition=TP.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=tuple(headers),
    )


def write(*records: ConsumerRecord[bytes, bytes]) -> tuple[FakeClickHouse, SinkCounters]:
    ch, c = FakeClickHouse(), SinkCounters()
    _write_batch(ch, SETTINGS, {TP: list(records)}, c)  # type: ignore[arg-type]
    return ch, c


def stored_ids(ch: FakeClickHouse) -> list[str]:
    return [str(row[0]) for row in ch.rows["telemetry.requests"]]


def rejected(ch: FakeClickHouse) -> list[tuple[str, str, str]]:
    """(location, field, reason) of each rejected row."""
    return [(row[1], row[2], row[3]) for row in ch.rows["telemetry.rejected"]]


def test_a_bad_line_is_rejected_alone_and_its_neighbours_are_stored() -> None:
    good = [make_event() for _ in range(4)]
    late = make_event(ttft_ms=9000.0, latency_ms=100.0)  # valid JSON, breaks a rule
    lines = [orjson.dumps(e) for e in good[:2]] + [orjson.dumps(late)]
    lines += [orjson.dumps(good[2]), b'{"event_id": "cut sho', orjson.dumps(good[3])]
    ch, c = write(record(7, b"\n".join(lines)))
    assert sorted(stored_ids(ch)) == sorted(e["event_id"] for e in good)
    assert c.events_seen == 4 and c.events_stored == 4 and c.rejected == 2
    got = rejected(ch)
    assert [(loc, field) for loc, field, _ in got] == [
        ("partition 2 offset 7 line 3", "ttft_ms"),
        ("partition 2 offset 7 line 5", "$"),
    ]
    assert got[0][2].startswith("ttft_ms: ")
    assert "malformed JSON" in got[1][2]
    # What is kept of a bad line is that line, not the whole record.
    raws = [row[4] for row in ch.rows["telemetry.rejected"]]
    assert late["event_id"] in raws[0]
    assert not any(e["event_id"] in raws[0] for e in good)
    assert all(row[0] == "kafka:ev" for row in ch.rows["telemetry.rejected"])


def test_line_numbers_count_events_and_crlf_is_read() -> None:
    a, b = make_event(), make_event()
    value = orjson.dumps(a) + b"\r\n" + orjson.dumps(b) + b"\r\n" + b'{"schema_version": 1}\n'
    ch, _ = write(record(3, value))
    assert sorted(stored_ids(ch)) == sorted([a["event_id"], b["event_id"]])
    assert [loc for loc, _, _ in rejected(ch)] == ["partition 2 offset 3 line 3"]


def test_third_party_one_event_records_keyed_by_model_still_work() -> None:
    e = make_event()
    good = record(11, orjson.dumps(e), headers=(), key=e["model"].encode())
    bad = record(12, orjson.dumps(make_event(input_tokens=-1)), headers=(), key=b"m")
    ch, _ = write(good, bad)
    assert stored_ids(ch) == [e["event_id"]]
    # A one-event record keeps the record's own location, without a line.
    assert [(loc, field) for loc, field, _ in rejected(ch)] == [
        ("partition 2 offset 12", "input_tokens")
    ]


def test_a_record_of_another_format_is_rejected_whole() -> None:
    e = make_event()
    other = record(20, orjson.dumps([e]), headers=[("content-type", b"application/json")])
    newer = record(21, orjson.dumps(e), headers=[("telemetry-schema", b"request.v2")])
    empty = record(22, None)
    after = make_event()
    ch, c = write(other, newer, empty, record(23, orjson.dumps(after)))
    assert stored_ids(ch) == [after["event_id"]]  # the batch goes on past them
    got = rejected(ch)
    assert [(loc, field) for loc, field, _ in got] == [
        ("partition 2 offset 20", "content-type"),
        ("partition 2 offset 21", "telemetry-schema"),
        ("partition 2 offset 22", "$"),
    ]
    assert "application/json" in got[0][2]
    assert "request.v2" in got[1][2]
    assert c.rejected == 3
