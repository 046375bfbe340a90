"""The batch validator accepts exactly what the model accepts, with the same values.

Random documents mix valid events with every kind of damage (wrong types,
bounds, missing fields, bad timestamps, non-objects, oversize and malformed
lines); each line's fate through ``validate_lines`` must equal its fate
through ``decode_event``, the per-event definition.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.batch import validate_lines
from schemas.codec import MAX_EVENT_BYTES, decode_event
from schemas.errors import InvalidEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.5,
    2**63 - 1,
    "",
    "x",
    "1",
    [],
    {},
    1e308,
    -0.0,
    100,
    599,
    600,
    86_400_000,
    86_400_000.001,
    100_000_000,
    100_000_001,
    "2026-03-01T11:00:00Z",
    "2026-03-01T11:00:00.123456+02:00",
    "2026-03-01 11:00:00z",
    "2026-03-01T11:00:00",
    "2026-03-01T12:06:00Z",
    "2026-01-01T00:00:00Z",
    "12345678123456781234567812345678",
    "{12345678-1234-5678-1234-567812345678}",
    "urn:uuid:12345678-1234-5678-1234-567812345678",
    "ABCDEF78-1234-5678-1234-567812345678",
    # A newline inside a value must not let a column-wide pattern check pass.
    "12345678-1234-5678-1234-567812345678\n12345678-1234-5678-1234-567812345678",
    "2026-03-01T11:00:00Z\n2026-03-01T11:00:00Z",
    "\u0662\u0660\u0662\u0666-03-01T11:00:00Z",  # digits, but not ASCII ones
    "2026-03-01T11:00:00.1234567891Z",
    "2026-03-01T23:59:60Z",
    "ok",
    "error",
    "timeout",
    "cancelled",
]


def _doc(rng: random.Random, factory: Any) -> Any:
    ts = NOW - timedelta(seconds=rng.random() * 86_400 * 29)
    doc = factory(ts=ts.isoformat().replace("+00:00", "Z"))
    if rng.random() < 0.5:
        doc["ttft_ms"] = round(rng.random() * 5_000, rng.choice([0, 3, 6]))
        doc["latency_ms"] = doc["ttft_ms"] + round(rng.random() * 9_000, rng.choice([0, 3, 6]))
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        name = rng.choice(sorted(doc))
        if rng.random() < 0.1:
            del doc[name]
        else:
            doc[name] = rng.choice(HOSTILE)
    return doc


def _lines(n: int, seed: int, factory: Any) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.02:
            out.append(rng.choice([b"[1,2]", b'"text"', b"42", b"null", b"{", b"\xff\xfe", b""]))
        elif roll < 0.03:
            doc = factory()
            doc["pad"] = "x" * MAX_EVENT_BYTES
            out.append(orjson.dumps(doc))
        elif roll < 0.05:
            # Byte-level forms: a BOM, a CR left by CRLF line ends, a key twice.
            raw = orjson.dumps(_doc(rng, factory))
            out.append(
                rng.choice(
                    [
                        b"\xef\xbb\xbf" + raw,
                        raw + b"\r",
                        b'{"http_status":"x",' + raw[1:],
                        raw[:-1] + b',"http_status":"x"}',
                    ]
                )
            )
        else:
            out.append(orjson.dumps(_doc(rng, factory)))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_every_line_has_the_fate_it_has_alone(event_factory: Any, seed: int) -> None:
    lines = _lines(2_000, seed, event_factory)
    batch = validate_lines(lines, now=NOW)
    rejected = dict(batch.rejects)
    cols = batch.events
    assert sorted([*cols.index, *rejected]) == list(range(len(lines)))
    at = {i: k for k, i in enumerate(cols.index)}
    for i, line in enumerate(lines):
        try:
            ev = decode_event(line, now=NOW)
        except InvalidEvent as exc:
            assert i in rejected, (line, exc.reason)
            assert (rejected[i].field, rejected[i].reason) == (exc.field, exc.reason)
            continue
        assert i in at, (line, rejected.get(i))
        k = at[i]
        assert cols.event_id[k] == ev.event_id.bytes
        assert cols.ts_ms[k] == round(ev.ts.timestamp() * 1000)
        got = {
            name: getattr(cols, name)[k]
            for name in (
                "ttft_ms",
                "latency_ms",
                "status",
                "error_type",
                "model",
                "provider",
                "region",
                "gateway_id",
                "stream",
                "http_status",
                "input_tokens",
                "output_tokens",
                "cached_input_tokens",
            )
        }
        assert got == {name: getattr(ev, name) for name in got}
    assert len(cols) > 500 and len(rejected) > 100  # the mix exercises both fates


def test_an_empty_batch_is_empty() -> None:
    batch = validate_lines([], now=NOW)
    assert not batch.events and not batch.rejects


def test_round3_is_pythons_round_for_every_value() -> None:
    import numpy as np

    from schemas.batch import round3

    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            rng.uniform(0, 86_400_000, 100_000),
            rng.lognormal(6, 2, 100_000),
            # Halves and near-halves at the third decimal, exact ties among them.
            np.arange(0, 5_000) / 1000.0 + 0.0005,
            np.array([0.0625, 2.675, 1.0005, 0.0005, 0.0015, 1e-9, 86_400_000.0, 0.0]),
            np.nextafter(np.arange(1, 2_000) / 1000.0 + 0.0005, 0),
        ]
    )
    got = round3(values).tolist()
    assert got == [round(v, 3) for v in values.tolist()]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", "12345678-1234-5678-1234-567812345678\n12345678-1234-5678-1234-567812345678"),
        ("ts", "2026-03-01T11:00:00Z\n2026-03-01T11:00:00Z"),
        ("event_id", "12345678-1234-5678-1234-56781234567"),
        ("ts", "2026-03-01T11:00Z"),
    ],
)
def test_one_bad_pattern_among_valid_events_is_rejected_alone(
    event_factory: Any, name: str, value: str
) -> None:
    """Patterns are checked for a whole column at once: one value that breaks
    them (even by holding a newline) is rejected, its neighbours are kept."""
    docs = [event_factory(ts="2026-03-01T11:00:00Z") for _ in range(50)]
    docs[17][name] = value
    lines = [orjson.dumps(d) for d in docs]
    batch = validate_lines(lines, now=NOW)
    with pytest.raises(InvalidEvent) as alone:
        decode_event(lines[17], now=NOW)
    assert [(i, e.field, e.reason) for i, e in batch.rejects] == [
        (17, alone.value.field, alone.value.reason)
    ]
    assert batch.events.index == [i for i in range(50) if i != 17]
    assert batch.events.event_id == [
        decode_event(line, now=NOW).event_id.bytes for i, line in enumerate(lines) if i != 17
    ]


def _stamps_have_their_own_fate(lines: list[bytes]) -> int:
    """Each line's fate through ``validate_lines`` is its fate through ``decode_event``,
    and a valid one's time is the model's, to the millisecond; returns the rejects."""
    batch = validate_lines(lines, now=NOW)
    rejected = {i: (e.field, e.reason) for i, e in batch.rejects}
    at = {i: k for k, i in enumerate(batch.events.index)}
    for i, line in enumerate(lines):
        try:
            ev = decode_event(line, now=NOW)
        except InvalidEvent as exc:
            assert rejected.get(i) == (exc.field, exc.reason), line
            continue
        assert batch.events.ts_ms[at[i]] == round(ev.ts.timestamp() * 1000), line
    return len(rejected)


@pytest.mark.parametrize("seed", range(20))
def test_stamps_of_several_lengths_have_the_fate_they_have_alone(
    event_factory: Any, seed: int
) -> None:
    """A batch mixing whole seconds and fractions of each length (the usual
    gateway output), ending in ``Z`` or ``+00:00``, is checked a length at a
    time; a stamp of a known length with a wrong mark or offset, a day that
    does not exist or a non-ASCII digit among them still has its own fate."""
    rng = random.Random(seed)
    forms = ["", ".1", ".12", ".123", ".1234", ".123456", ".123456789"]
    odd = [
        "2026-02-30T11:00:00Z",
        "2026-03-01T11:00:00.123Y",
        "2026-03-01t11:00:00Z",
        "2026-03-01T11:00:00.12\u0663Z",
        "2026-03-01T25:00:00Z",
        "2026-03-01T11:00:00-00:00",
        "2026-03-01T11:00:00+01:00",
        "2026-03-01T11:00:00.5+00:00Z",
        "2026-03-01T11:00:00+00:00+00:00",
        "2026-03-01 11:00:00+00:00",
    ]
    docs = []
    for _ in range(300):
        stamp = (NOW - timedelta(seconds=rng.randint(1, 86_400))).strftime("%Y-%m-%dT%H:%M:%S")
        offset = rng.choice(["Z", "Z", "+00:00"]) if seed % 2 else "+00:00"
        docs.append(event_factory(ts=stamp + rng.choice(forms) + offset))
    for _ in range(seed % 4):
        docs[rng.randrange(len(docs))]["ts"] = rng.choice(odd)
    _stamps_have_their_own_fate([orjson.dumps(d) for d in docs])


@pytest.mark.parametrize("seed", range(6))
def test_plain_utc_stamps_are_read_from_their_digits_as_parsing_reads_them(
    seed: int, monkeypatch: Any
) -> None:
    """``_plain_utc_ms`` (the usual column, computed from its digits) against
    ``_ts_column`` (numpy's parse), for columns of a few years from the first
    to the last the calendar has, leap days and month ends included, in each
    form; with the accepted range opened wide so that every instant is
    compared, not only those near now."""
    import schemas.batch as batch_module

    monkeypatch.setattr(batch_module, "_FUTURE_US", 1 << 62)
    monkeypatch.setattr(batch_module, "_AGE_US", 1 << 62)
    rng = random.Random(seed)
    suffix = ["Z", "+00:00"][seed % 2]
    fraction = ["", ".1", ".12", ".123", ".1234", ".12345", ".123456"][seed]
    now_us = batch_module._us(NOW)

    def text(moment: datetime) -> str:
        digits = "".join(rng.choice("0123456789") for _ in fraction[1:])
        plain = moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
        return plain + fraction[:1] + digits + suffix

    for first in (1, 4, 1599, 1968, 1999, 2023, 2099, 9996):
        start = datetime(first, 1, 1, tzinfo=UTC)
        end = datetime(first + 3, 12, 31, 23, 59, 59, tzinfo=UTC)
        moments = [start, end]
        years = range(first, first + 4)
        leap = [y for y in years if y % 4 == 0 and (y % 100 or y % 400 == 0)]
        moments += [datetime(y, 2, 29, 23, 59, 59, tzinfo=UTC) for y in leap]
        month_ends = [(y, m) for y in years for m in range(1, 13) if (y, m) != (first, 1)]
        moments += [datetime(y, m, 1, tzinfo=UTC) - timedelta(seconds=1) for y, m in month_ends]
        span = int((end - start).total_seconds())
        moments += [start + timedelta(seconds=rng.randrange(span)) for _ in range(500)]
        stamps = [text(m) for m in moments]
        got = batch_module._plain_utc_ms(stamps, now_us)
        assert got is not None, first
        assert got == batch_module._ts_column(stamps, now_us), first
    # What the form does not cover is left to the parse, whole column.
    stamps = [text(datetime(2026, 1, 1, tzinfo=UTC)), text(datetime(2030, 1, 1, tzinfo=UTC))]
    assert batch_module._plain_utc_ms(stamps, now_us) is None  # more than four years
    for odd in ("2026-02-29", "2100-02-29", "2026-04-31", "2026-13-01", "2026-00-10"):
        assert batch_module._plain_utc_ms([stamps[0], odd + stamps[0][10:]], now_us) is None
    assert batch_module._plain_utc_ms(["0000-01-01" + stamps[0][10:]], now_us) is None
    assert batch_module._plain_utc_ms([stamps[0], stamps[0].replace("T", "t")], now_us) is None
    assert batch_module._plain_utc_ms([stamps[0], "\u0661" + stamps[0][1:]], now_us) is None


@pytest.mark.parametrize("seed", range(8))
def test_a_column_of_one_form_with_a_bad_stamp_of_its_length_is_decided_alone(
    event_factory: Any, seed: int
) -> None:
    """One length for every stamp (the form ``_plain_utc_ms`` takes) and one
    odd stamp of that length among them: it has the fate it has alone, the
    others are read as the model reads them."""
    rng = random.Random(seed)
    suffix = ["Z", "+00:00"][seed % 2]
    fraction = ["", ".123", ".123456", ".5"][seed // 2]
    docs = []
    for _ in range(200):
        moment = NOW - timedelta(seconds=rng.randint(1, 86_400), microseconds=rng.randrange(10**6))
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + moment.strftime(".%f")[: len(fraction)]
        docs.append(event_factory(ts=stamp + suffix))
    odd = "2026-02-30T11:00:00" + fraction + suffix
    docs[rng.randrange(len(docs))]["ts"] = odd
    assert _stamps_have_their_own_fate([orjson.dumps(d) for d in docs]) == 1
