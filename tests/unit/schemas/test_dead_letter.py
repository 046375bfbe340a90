"""The one dead-letter format: every producer writes it, the sink reads it without guessing.

Older records (the collector's and ``telemetry ingest``'s former documents) can
still be on the topic; they are read by their keys. Anything else is refused
with a reason, never misread.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from collector.encoding import dead_letter_value
from collector.handoff import Rejected as HttpRejected
from processors.kafka_io import dlq_record
from processors.sinks.kafka_sink import _from_dlq
from schemas.dead_letter import (
    FORMAT,
    RAW_LIMIT,
    UnreadableDeadLetter,
    decode_dead_letter,
    encode_dead_letter,
)

PROMPT = "tell me the secret"
EVENT_WITH_PROMPT = orjson.dumps({"model": "m", "ttft_ms": 5.0, "prompt": PROMPT})


def test_every_producer_writes_the_one_format() -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    values = {
        "http": HttpRejected(
            4, "ttft_ms", "ttft_ms: bad", EVENT_WITH_PROMPT, "http:t@h", at
        ).to_dlq(),
        "collector": dead_letter_value(
            source="emitter:gw", index=-1, field="$", reason="$: r", raw=b"[1]"
        ),
        "ingest": dlq_record(
            source="ingest:f", location="line 9", field="ts", reason="ts: r", raw=b"x"
        ),
    }
    for value in values.values():
        doc = orjson.loads(value)
        assert doc["format"] == FORMAT
        assert set(doc) == {
            "format", "received_at", "source", "location", "index",
            "field", "reason", "raw", "raw_truncated",
        }  # fmt: skip
        assert doc["received_at"].endswith("Z")
    http = decode_dead_letter(values["http"])
    assert (http.source, http.location, http.index, http.field) == (
        "http:t@h",
        "index 4",
        4,
        "ttft_ms",
    )
    assert http.received_at == "2026-03-01T12:00:00Z"
    assert PROMPT.encode() not in http.raw and http.raw_truncated
    emitter = decode_dead_letter(values["collector"])
    assert (emitter.location, emitter.index) == ("emit()", None)
    ingest = decode_dead_letter(values["ingest"])
    assert (ingest.location, ingest.index, ingest.reason) == ("line 9", None, "ts: r")


def test_raw_is_redacted_and_capped_when_written() -> None:
    value = encode_dead_letter(
        source="s", location="line 1", field="$", reason="r", raw=b"y" * 100_000
    )
    letter = decode_dead_letter(value)
    assert len(letter.raw) <= RAW_LIMIT and letter.raw.startswith(b"y" * 256)
    assert letter.raw_truncated
    exact = encode_dead_letter(source="s", location="line 1", field="$", reason="r", raw=b"1")
    assert not decode_dead_letter(exact).raw_truncated


def test_older_forms_are_read_by_their_keys() -> None:
    """Records written before the one format may still be on the topic."""
    old_collector = orjson.dumps(
        {
            "received_at": "2026-03-01T12:00:00Z",
            "source": "http:t@h",
            "index": 7,
            "field": "ts",
            "reason": "ts: bad",
            "raw": "{}",
            "raw_truncated": False,
        }
    )
    old_emitter = orjson.dumps(
        {"source": "emitter:gw", "index": -1, "field": "$", "reason": "$: r", "raw": "1"}
    )
    old_ingest = orjson.dumps(
        {
            "received_at": "2026-03-01T12:00:00+00:00",
            "source": "ingest:f",
            "location": "line 3",
            "field": "$",
            "reason": "$: malformed JSON",
            "raw": "garbage",
        }
    )
    assert decode_dead_letter(old_collector).location == "index 7"
    assert decode_dead_letter(old_collector).index == 7
    assert decode_dead_letter(old_emitter).location == "emit()"
    assert decode_dead_letter(old_ingest).location == "line 3"
    assert decode_dead_letter(old_ingest).raw == b"garbage"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (orjson.dumps({"format": "telemetry.dead-letter.v9", "location": "x"}), "v9"),
        (orjson.dumps({"source": "s", "field": "f"}), "neither this format"),
    ],
)
def test_anything_else_is_refused_with_a_reason(value: bytes, why: str) -> None:
    with pytest.raises(UnreadableDeadLetter, match=why):
        decode_dead_letter(value)


def test_the_sink_keeps_each_form_as_a_row_and_an_unreadable_one_whole() -> None:
    new = dead_letter_value(source="http:t@h", index=2, field="ts", reason="ts: r", raw=b"{}")
    row = _from_dlq(new, "kafka:dlq").row()
    assert row[:4] == ("http:t@h", "index 2", "ts", "ts: r")
    unknown = orjson.dumps({"format": "other.v2", "raw": PROMPT})
    row = _from_dlq(unknown, "kafka:dlq").row()
    assert row[:3] == ("kafka:dlq", "dead-letter", "$")
    assert row[3].startswith("unreadable dead-letter record: format 'other.v2'")
