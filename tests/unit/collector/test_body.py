"""Body decoding and per-event validation, without a server."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
import zstandard

from collector.http.body import (
    BodyError,
    content_encoding,
    content_kind,
    decompress,
    parse_events,
)


def ndjson(events: list[Any]) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events) + b"\n"


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("Application/X-NDJSON", "ndjson"),
    ],
)
def test_content_types(header: str, kind: str) -> None:
    assert content_kind(header) == kind


@pytest.mark.parametrize("header", [None, "text/plain", "application/xml", "multipart/form-data"])
def test_unsupported_content_type_is_415(header: str | None) -> None:
    with pytest.raises(BodyError) as err:
        content_kind(header)
    assert err.value.status == 415


def test_encodings() -> None:
    assert content_encoding(None) == "identity"
    assert content_encoding("GZIP") == "gzip"
    with pytest.raises(BodyError) as err:
        content_encoding("br")
    assert err.value.status == 415


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_round_trip_and_bombs(encoding: str) -> None:
    data = b'{"a": 1}\n' * 1000
    packed = gzip.compress(data) if encoding == "gzip" else zstandard.compress(data)
    assert decompress(packed, encoding, 1 << 20) == data
    bomb = b"\0" * (50 << 20)
    packed_bomb = gzip.compress(bomb) if encoding == "gzip" else zstandard.compress(bomb)
    assert len(packed_bomb) < 100_000
    with pytest.raises(BodyError) as err:
        decompress(packed_bomb, encoding, 1 << 20)
    assert err.value.status == 413
    for corrupt in (b"not compressed at all", packed[: len(packed) // 2]):
        with pytest.raises(BodyError) as err:
            decompress(corrupt, encoding, 1 << 20)
        assert err.value.status == 400


def test_concatenated_gzip_members() -> None:
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"


def test_json_array_partial_success(event_factory: Any) -> None:
    good = [event_factory() for _ in range(3)]
    bad = [event_factory(http_status=700), "not an object", event_factory(ts="yesterday")]
    body = orjson.dumps([good[0], bad[0], good[1], bad[1], bad[2], good[2]])
    parsed = parse_events(body, "json", source="test")
    assert [str(e.event_id) for e in parsed.events] == [g["event_id"] for g in good]
    assert [(r.index, r.field) for r in parsed.rejected] == [
        (1, "http_status"),
        (3, "$"),
        (4, "ts"),
    ]
    assert all(r.reason.startswith(r.field) for r in parsed.rejected)
    assert orjson.loads(parsed.rejected[0].raw)["http_status"] == 700


def test_ndjson_partial_success_with_lines(event_factory: Any) -> None:
    lines = [
        orjson.dumps(event_factory()),
        b"{not json",
        b"",
        orjson.dumps(event_factory(status="error")),  # error without error_type
        b'{"pad": "' + b"x" * 70_000 + b'"}',  # a huge line
        orjson.dumps(event_factory()),
    ]
    parsed = parse_events(b"\n".join(lines), "ndjson", source="test")
    assert len(parsed.events) == 2
    assert [(r.index, r.field) for r in parsed.rejected] == [(1, "$"), (2, "error_type"), (3, "$")]
    assert parsed.lines == [2, 4, 5]
    assert "byte limit" in parsed.rejected[2].reason


@pytest.mark.parametrize("body", [b"[1, 2", b"", b"42", b'"text"'])
def test_unusable_json_body_is_400(body: bytes) -> None:
    with pytest.raises(BodyError) as err:
        parse_events(body, "json", source="test")
    assert err.value.status == 400


def test_single_object_is_a_batch_of_one(event_factory: Any) -> None:
    assert len(parse_events(orjson.dumps(event_factory()), "json", source="t").events) == 1
