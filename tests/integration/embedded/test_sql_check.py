"""The SQL shortcut of `telemetry ingest` never accepts what the model refuses, nor changes a value.

``processors.embedded.sql_check`` stages the lines that certainly keep the
contract; the batch validator decides all others. Here random lines (valid
events in the plain form, and every kind of damage near the rules' edges)
go through ``stage_lines`` on the real engine: each staged line must be one
``decode_event`` accepts, with exactly the same values, and the plain valid
lines must take the shortcut (or it would be useless, not wrong).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from processors.embedded.blocks import iter_text_blocks
from processors.embedded.ingest import stage_lines
from schemas.codec import decode_event
from schemas.errors import InvalidEvent

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=123456)


def _iso(dt: datetime, digits: int = 3, suffix: str = "Z") -> str:
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{dt.microsecond:06d}"[:digits]
    return base + (f".{frac}" if digits else "") + suffix


def _event(rng: random.Random) -> dict[str, Any]:
    failed = rng.random() < 0.2
    latency = round(rng.uniform(0, 5000), rng.choice([0, 1, 2, 3]))
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "schema_version": 1,
        "ts": _iso(NOW - timedelta(seconds=rng.uniform(0, 6 * 86400)), rng.choice([0, 1, 3, 6])),
        "gateway_id": rng.choice(["gw-1", "g", "ü" * 128, "x" * 128]),
        "region": rng.choice([None, "eu-west", "", "é" * 128]),
        "model": rng.choice(["openai/gpt-4.1-mini", "m" * 200, "模型/名"]),
        "provider": rng.choice(["openai", "p" * 100]),
        "stream": rng.random() < 0.5,
        "status": "error" if failed else "ok",
        "error_type": rng.choice(["timeout", "client_error", "cancelled"]) if failed else None,
        "http_status": rng.choice([100, 200, 429, 599]),
        "ttft_ms": rng.choice([None, 0, round(latency * rng.random(), 3), latency]),
        "latency_ms": latency,
        "input_tokens": rng.choice([0, 5, 100_000_000]),
        "output_tokens": rng.choice([0, 1, 2, 350]),
        "cached_input_tokens": 0,
    }


#: Damage near every rule the SQL decides; each returns the line to test.
def _damaged(rng: random.Random, e: dict[str, Any]) -> bytes:
    kind = rng.randrange(34)
    d = dict(e)
    if kind == 0:
        d["gateway_id"] = "x" * 129
    elif kind == 1:
        d["model"] = ""
    elif kind == 2:
        d["provider"] = "p" * 101
    elif kind == 3:
        d["region"] = "r" * 129
    elif kind == 4:
        d["ts"] = _iso(NOW + timedelta(minutes=5, milliseconds=1))
    elif kind == 5:
        d["ts"] = _iso(NOW + timedelta(minutes=5))  # the edge: valid
    elif kind == 6:
        d["ts"] = _iso(NOW - timedelta(days=30), 6)  # the edge: valid
    elif kind == 7:
        d["ts"] = _iso(NOW - timedelta(days=30, microseconds=1000), 6)
    elif kind == 8:
        d["ts"] = "2026-02-30T00:00:00Z"
    elif kind == 9:
        d["ts"] = _iso(NOW)[:17] + "60Z"  # a leap second
    elif kind == 10:
        d["ts"] = _iso(NOW, 6, "+01:00")
    elif kind == 11:
        d["ts"] = _iso(NOW, 0, "")  # no offset
    elif kind == 12:
        d["latency_ms"] = 86_400_000.001
    elif kind == 13:
        d["latency_ms"], d["ttft_ms"] = 86_400_000, 86_400_000  # the edge: valid
    elif kind == 14:
        d["ttft_ms"] = d["latency_ms"] + 0.001
    elif kind == 15:
        d["input_tokens"] = 100_000_001
    elif kind == 16:
        d["cached_input_tokens"] = d["input_tokens"] + 1
    elif kind == 17:
        d["status"], d["error_type"] = "ok", "timeout"
    elif kind == 18:
        d["status"], d["error_type"] = "error", None
    elif kind == 19:
        d["http_status"] = 99
    elif kind == 20:
        d["http_status"] = 600
    elif kind == 21:
        d["schema_version"] = 1.0
    elif kind == 22:
        d["stream"] = 1
    elif kind == 23:
        d["latency_ms"] = 1234.56789  # more than 3 decimals: the model rounds
    elif kind == 24:
        return orjson.dumps(d).replace(b'"latency_ms":', b'"latency_ms":1e3,"x":')
    elif kind == 25:
        return orjson.dumps(d).replace(b",", b" , ", 3).replace(b":", b": ", 2)  # spaces: valid
    elif kind == 26:
        return orjson.dumps(d) + b"\r"  # a CRLF line: valid
    elif kind == 27:
        return b"\xef\xbb\xbf" + orjson.dumps(d)  # a BOM
    elif kind == 28:
        return orjson.dumps(d)[:-1] + b',"event_id":"' + str(uuid.uuid4()).encode() + b'"}'
    elif kind == 29:
        return orjson.dumps(dict(reversed(list(d.items()))))  # another order: valid
    elif kind == 30:
        return orjson.dumps({**d, "model": "a\\u00e9b"}).replace(b"\\\\", b"\\")  # an escape
    elif kind == 31:
        return orjson.dumps(d).replace(b"openai", b"open\xffai")  # invalid UTF-8
    elif kind == 32:
        return orjson.dumps({**d, "prompt": "secret"})  # an extra field: valid
    else:
        d["event_id"] = d["event_id"].upper()  # valid
    return orjson.dumps(d)


def _stored_values(ch: Any) -> dict[int, tuple[Any, ...]]:
    rows = ch.query(
        "SELECT pos, lower(hex(event_id)), toUnixTimestamp64Milli(ts), gateway_id, region, "
        "model, provider, stream, status, error_type, http_status, ttft_ms, latency_ms, "
        "input_tokens, output_tokens, cached_input_tokens FROM telemetry_ingest_block"
    )
    return {int(r[0]): tuple(r[1:]) for r in rows}


def _model_values(line: bytes) -> tuple[Any, ...] | None:
    try:
        e = decode_event(line, now=NOW)
    except InvalidEvent:
        return None
    ts_ms = (e.ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return (
        e.event_id.hex,
        ts_ms,
        e.gateway_id,
        e.region,
        e.model,
        e.provider,
        e.stream,
        e.status,
        e.error_type,
        e.http_status,
        e.ttft_ms,
        e.latency_ms,
        e.input_tokens,
        e.output_tokens,
        e.cached_input_tokens,
    )


@pytest.mark.parametrize("reader", ["engine", "arrow"])
@pytest.mark.parametrize("seed", range(4))
def test_staged_lines_are_valid_with_the_same_values(
    clickhouse: Any, seed: int, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways into the engine: chDB reads the text itself, a server gets Arrow."""
    if reader == "arrow":
        monkeypatch.setattr(type(clickhouse), "is_embedded", property(lambda self: False))
    rng = random.Random(seed)
    lines: list[bytes] = []
    plain: set[int] = set()
    for i in range(600):
        e = _event(rng)
        if rng.random() < 0.4:
            plain.add(i + 1)
            lines.append(orjson.dumps(e))
        else:
            lines.append(_damaged(rng, e))
    assert not any(b"\n" in line for line in lines)
    (block,) = iter_text_blocks([b"\n".join(lines)], block_lines=len(lines), pieces=2)
    count, rest = stage_lines(clickhouse, block, NOW)
    staged = _stored_values(clickhouse)
    clickhouse.command("TRUNCATE TABLE telemetry_ingest_block")

    assert count == len(staged)
    # Every line is staged or handed back as it is, with its number.
    assert [line for _, line in rest] == [lines[n - 1] for n, _ in rest]
    assert sorted(set(range(1, len(lines) + 1)) - {n for n, _ in rest}) == sorted(staged)
    for n, values in staged.items():
        assert _model_values(lines[n - 1]) == values, lines[n - 1]
    assert plain <= set(staged)  # the plain form takes the shortcut
