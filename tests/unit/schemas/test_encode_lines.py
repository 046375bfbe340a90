"""``encode_lines`` and ``encode_array_fast``: the HTTP door's raw-bytes path, against the model.

Each line's fate (accepted with ``encode_event``'s exact bytes, or rejected
with the same field and reason) must be its fate through ``decode_event``
alone; an array body's items, their fate through ``orjson.loads`` and
``validate_event``. The inputs mix the random damage of
``tests/unit/schemas/test_batch.py`` with the byte-level forms where msgspec
and orjson could part: values of unknown fields msgspec would skip without
checking them, whitespace, duplicate keys, number forms, timestamp forms.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
import pytest

from schemas.batch import encode_array_fast, encode_lines, encode_lines_fast, validate_lines
from schemas.codec import decode_event, encode_event, validate_event
from schemas.errors import InvalidEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _base(factory: Any, k: int = 0) -> dict[str, Any]:
    ts = (NOW - timedelta(seconds=k * 7.25)).isoformat().replace("+00:00", "Z")
    return dict(factory(ts=ts, model=f"m/{k % 5}"))


def _byte_forms(factory: Any) -> list[bytes]:
    """One valid event's line, rewritten in the forms where the two parsers could part."""
    raw = orjson.dumps(_base(factory))
    body = raw[:-1]
    return [
        raw,
        # unknown fields: msgspec skips their values, orjson parses them
        body + b',"pad":1e400}',
        body + b',"pad":-1e400}',
        body + b',"pad":99999999999999999999999999}',
        body + b',"pad":"\xff"}',
        body + b',"pad":"\\ud800"}',
        body + b',"pad":' + b"[" * 2000 + b"]" * 2000 + b"}",
        body + b',"pad":{"a":[1,2,{"b":null}]}}',
        body + b',"pad":NaN}',
        body + b',"pad":01}',
        body + b',"pad":"x"}',
        # whitespace JSON allows, and characters it does not
        raw.replace(b",", b" ,\t"),
        raw.replace(b":", b"\r\n:"),
        body + b"\x0c}",
        body + b"\x0b}",
        b"\xc2\xa0" + raw,
        raw + b"\r",
        raw + b" ",
        raw + b"\x00",
        raw + b"{}",
        raw + b",",
        b"\xef\xbb\xbf" + raw,
        # a key twice: the last one counts for both parsers
        b'{"http_status":"x",' + raw[1:],
        body + b',"http_status":"x"}',
        body + b',"http_status":201}',
        # numbers in other spellings
        raw.replace(b'"http_status":200', b'"http_status":2e2'),
        raw.replace(b'"http_status":200', b'"http_status":200.0'),
        raw.replace(b'"http_status":200', b'"http_status":-0'),
        raw.replace(b'"input_tokens":120', b'"input_tokens":120.0'),
        raw.replace(b'"latency_ms":2300.0', b'"latency_ms":2300'),
        raw.replace(b'"latency_ms":2300.0', b'"latency_ms":2.3e3'),
        raw.replace(b'"latency_ms":2300.0', b'"latency_ms":2300.00049999'),
        raw.replace(b'"latency_ms":2300.0', b'"latency_ms":2300.0005'),
        raw.replace(b'"ttft_ms":420.0', b'"ttft_ms":-0.0'),
        raw.replace(b'"ttft_ms":420.0', b'"ttft_ms":null'),
        raw.replace(b'"stream":true', b'"stream":1'),
        raw.replace(b'"schema_version":1', b'"schema_version":1.0'),
        raw.replace(b'"schema_version":1', b'"schema_version":true'),
        # strings with escapes, and the widest text a bound allows
        raw.replace(b'"gw-test-1"', b'"gw\\u00e9\\n\\"\\/"'),
        raw.replace(b'"gw-test-1"', b'"' + "é".encode() * 128 + b'"'),
        raw.replace(b'"gw-test-1"', b'"' + "é".encode() * 129 + b'"'),
        raw.replace(b'"gw-test-1"', b'"\\ud83d\\ude00"'),
        raw.replace(b'"gw-test-1"', b'"\x01"'),
    ]


def _ts_forms() -> list[str]:
    at = NOW - timedelta(hours=2, microseconds=123_456)
    whole = at.replace(microsecond=0)
    z = "%Y-%m-%dT%H:%M:%S"
    return [
        at.strftime(z) + ".123456Z",
        at.strftime(z) + ".123Z",
        at.strftime(z) + ".1Z",
        at.strftime(z) + ".12Z",
        at.strftime(z) + ".123456789Z",
        at.strftime(z) + ".000999Z",
        whole.strftime(z) + "Z",
        whole.strftime(z) + ".000Z",
        whole.strftime(z) + ".000000Z",
        at.strftime(z) + ".123456+00:00",
        at.strftime(z) + ".123456-00:00",
        at.strftime(z) + ".123456+05:30",
        at.strftime(z) + ".123456z",
        at.strftime("%Y-%m-%dt%H:%M:%S") + ".123Z",
        at.strftime("%Y-%m-%d %H:%M:%S") + ".123Z",
        at.strftime(z) + ".123",
        at.strftime(z) + ".Z",
        at.strftime(z) + "Z\n",
        "2026-02-30T00:00:00Z",
        "2026-03-01T23:59:60Z",
        "2026-03-01T12:06:00.000Z",
        "2026-01-30T11:59:59.999Z",
        "\u0662\u0660\u0662\u0666-03-01T11:00:00.000Z",
    ]


def _id_forms() -> list[str]:
    return [
        "12345678-1234-5678-1234-567812345678",
        "ABCDEF78-1234-5678-1234-56781234ABCD",
        "abcdef78-1234-5678-1234-56781234abcd",
        "12345678123456781234567812345678",
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "12345678-1234-5678-1234-56781234567g",
        "12345678-1234-5678-1234-56781234567 ",
        "12345678-1234-5678-1234 567812345678",
        "12345678-1234-5678-1234-5678123456789",
        "1234567\u0661-1234-5678-1234-567812345678",
    ]


def _expected(lines: list[bytes]) -> tuple[list[tuple[int, bytes]], list[tuple[int, str, str]]]:
    good: list[tuple[int, bytes]] = []
    bad: list[tuple[int, str, str]] = []
    for i, line in enumerate(lines):
        try:
            good.append((i, encode_event(decode_event(line, now=NOW))))
        except InvalidEvent as exc:
            bad.append((i, exc.field, exc.reason))
    return good, bad


def _check(lines: list[bytes]) -> tuple[list[tuple[int, bytes]], list[tuple[int, str, str]]]:
    batch = encode_lines(lines, now=NOW)
    got = (
        list(zip(batch.index, batch.lines, strict=True)),
        [(i, e.field, e.reason) for i, e in batch.rejects],
    )
    want = _expected(lines)
    assert got == want
    models = {i: decode_event(lines[i], now=NOW).model for i, _ in want[0]}
    assert batch.model == [models[i] for i in batch.index]
    return want


def test_byte_forms_have_the_fate_they_have_alone(event_factory: Any) -> None:
    forms = _byte_forms(event_factory)
    good, bad = _check(forms)
    assert good and bad  # both fates are exercised
    # The same forms among a batch of valid events: the batch's column checks
    # take the usual path, and each odd line is judged on its own.
    lines = [orjson.dumps(_base(event_factory, k)) for k in range(60)]
    mixed = [line for pair in zip(lines, forms, strict=False) for line in pair] + lines
    _check(mixed)


def test_unknown_fields_go_to_the_model(event_factory: Any) -> None:
    """msgspec would skip a value orjson refuses: such a line is judged by the model."""
    body = orjson.dumps(_base(event_factory))[:-1]
    lines = [body + b',"pad":1e400}', body + b',"pad":"\xff"}', body + b',"pad":[[[]]]}']
    fast, others = encode_lines_fast(lines, now=NOW)
    assert fast.index == [] and others == [0, 1, 2]
    assert [i for i, _ in _check(lines)[0]] == [2]
    # validate_lines (the worker's and the embedded ingest's) decides the same
    batch = validate_lines(lines, now=NOW)
    assert batch.events.index == [2] and [i for i, _ in batch.rejects] == [0, 1]


@pytest.mark.parametrize("column", ["ts", "event_id"])
def test_every_form_of_a_column_alone_and_as_a_whole_column(
    event_factory: Any, column: str
) -> None:
    forms = _ts_forms() if column == "ts" else _id_forms()
    docs = [_base(event_factory, k) for k in range(len(forms))]
    for doc, value in zip(docs, forms, strict=True):
        doc[column] = value
    _check([orjson.dumps(d) for d in docs])
    # A column of one form only: the checks by slices of the joined column decide.
    for value in forms:
        same = [{**_base(event_factory, k), column: value} for k in range(40)]
        _check([orjson.dumps(d) for d in same])


def test_random_damage_has_the_fate_it_has_alone(event_factory: Any) -> None:
    rng = random.Random(7)
    forms = _byte_forms(event_factory)
    values: list[Any] = [*_ts_forms(), *_id_forms(), None, True, 0, -1, 1.5, "", "ok", "error"]
    values += ["timeout", 599, 600, 86_400_000, 86_400_000.001, 100_000_001, 2**63 - 1, [], {}]
    lines = []
    for k in range(3_000):
        roll = rng.random()
        if roll < 0.05:
            lines.append(rng.choice(forms))
            continue
        doc = _base(event_factory, k)
        if roll < 0.5:
            doc["ttft_ms"] = round(rng.random() * 5_000, rng.choice([0, 3, 4, 6]))
            doc["latency_ms"] = doc["ttft_ms"] + round(rng.random() * 9_000, rng.choice([0, 3, 6]))
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            doc[rng.choice(sorted(doc))] = rng.choice(values)
        lines.append(orjson.dumps(doc))
    good, bad = _check(lines)
    assert len(good) > 1_000 and len(bad) > 300


def test_canonical_lines_are_passed_on_as_they_are(event_factory: Any) -> None:
    lines = [encode_event(validate_event(_base(event_factory, k), now=NOW)) for k in range(50)]
    batch = encode_lines(lines, now=NOW)
    assert all(a is b for a, b in zip(batch.lines, lines, strict=True))
    # One line that is not canonical (an upper-case id): every line is still exact.
    doc = _base(event_factory, 3)
    doc["event_id"] = doc["event_id"].upper()
    lines[3] = orjson.dumps(doc)
    assert encode_lines(lines, now=NOW).lines == [
        encode_event(decode_event(x, now=NOW)) for x in lines
    ]


def _array_fates(body: bytes) -> tuple[list[tuple[int, bytes]], list[int]] | None:
    fast = encode_array_fast(body, now=NOW)
    if fast is None:
        return None
    valid, others = fast
    return list(zip(valid.index, valid.lines, strict=True)), others


@pytest.mark.parametrize("sep", [b",", b" , ", b"\n,\r\n\t", b",\x0c", b",\x0b", b",,"])
def test_an_array_body_is_what_orjson_reads(event_factory: Any, sep: bytes) -> None:
    forms = _byte_forms(event_factory)
    compared = 0
    for extra in [*forms, b"7", b"[]", b"null", b'"x"']:
        items = [orjson.dumps(_base(event_factory, k)) for k in range(5)]
        items[2] = extra
        for body in (
            b"[" + sep.join(items) + b"]",
            b" [" + sep.join(items) + b"] \n",
            b"\xef\xbb\xbf[" + sep.join(items) + b"]",
            b"[" + sep.join(items) + b"]x",
        ):
            fates = _array_fates(body)
            try:
                values = orjson.loads(body)
            except orjson.JSONDecodeError:
                assert fates is None, body
                continue
            if fates is None:
                continue  # the door reads it with orjson, as before
            valid, others = fates
            assert sorted([i for i, _ in valid] + others) == list(range(len(values)))
            for i, line in valid:
                assert line == encode_event(validate_event(values[i], now=NOW))
            compared += 1
    assert compared or sep in (b",\x0c", b",\x0b", b",,")


def test_the_wire_encoder_writes_what_orjson_writes() -> None:
    """msgspec encodes the valid rows: its text and numbers must be orjson's bytes."""
    rng = random.Random(3)
    texts = ["a" + chr(cp) + "b" for cp in [*range(0x3000), 0x2028, 0x2029, 0xFEFF, 0x10FFFF]]
    texts += ["a" + chr(cp) for cp in range(0xE000, 0x110000, 101)]
    durations = [round(rng.uniform(0, 86_400_000), 3) for _ in range(20_000)]
    durations += [round(10 ** rng.uniform(-3, 8), 3) for _ in range(20_000)]
    durations += [0.0, -0.0, 0.001, 0.01, 0.1, 1e-3, 86_400_000.0, 1e7, 12345678.9]
    for value in [*texts, *durations, True, False, None, 0, 599, 100_000_000]:
        assert msgspec.json.encode(value) == orjson.dumps(value), value
