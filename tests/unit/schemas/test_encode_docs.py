"""``encode_docs``: the emitter's and the HTTP door's batch path, against the model.

Each input's fate (accepted with ``encode_event``'s exact bytes, or rejected
with the same field and reason) must be its fate through ``validate_event``
alone. The inputs are what a gateway hands ``emit()`` as well as what a body
decodes to: Python objects (``datetime``, ``UUID``, ``Decimal``, NaN, a str
subclass, an upper-case UUID) besides JSON values.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from schemas.batch_docs import encode_docs
from schemas.codec import encode_event, validate_event
from schemas.errors import InvalidEvent
from schemas.valid_events import ValidEvents

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: JSON values that break one rule or another (``tests/unit/schemas/test_batch.py`` has more).
HOSTILE: list[Any] = [
    None, True, 0, -1, 1.5, 2**63 - 1, "", "x", [], {}, 1e308, 600, 86_400_000.001,
    100_000_001, "2026-03-01T11:00:00.123456+02:00", "2026-03-01 11:00:00z",
    "2026-03-01T11:00:00", "2026-03-01T12:06:00Z", "2026-01-01T00:00:00Z",
    "12345678123456781234567812345678", "{12345678-1234-5678-1234-567812345678}",
    "ok", "error", "timeout",
]  # fmt: skip


class Text(str):
    pass


PYTHON_VALUES: list[Any] = [
    NOW - timedelta(hours=1),
    (NOW - timedelta(hours=1)).replace(tzinfo=None),
    (NOW - timedelta(hours=1)).astimezone(timezone(timedelta(hours=5, minutes=30))),
    UUID("12345678-1234-5678-1234-567812345678"),
    "12345678-ABCD-5678-1234-567812345678",
    Decimal("1.5"),
    float("nan"),
    float("inf"),
    Text("ok"),
    Text("gw"),
    b"bytes",
    420,
    1e-4,
    0.0005,
    12.3456789,
    "a},{b",
    'q"},{"x',
]


def _python_doc(rng: random.Random, factory: Any) -> Any:
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
            doc[name] = rng.choice(PYTHON_VALUES + HOSTILE)
    return doc


@pytest.mark.parametrize("seed", range(4))
def test_every_doc_has_the_fate_and_bytes_it_has_alone(event_factory: Any, seed: int) -> None:
    rng = random.Random(seed)
    docs = [_python_doc(rng, event_factory) for _ in range(2_000)]
    docs += [1, None, "text", [event_factory()]]
    batch = encode_docs(docs, now=NOW)
    rejected = dict(batch.rejects)
    assert sorted([*batch.index, *rejected]) == list(range(len(docs)))
    line_of = dict(zip(batch.index, batch.lines, strict=True))
    for i, doc in enumerate(docs):
        try:
            ev = validate_event(doc, now=NOW)
        except InvalidEvent as exc:
            assert i in rejected, (doc, exc.reason)
            assert (rejected[i].field, rejected[i].reason) == (exc.field, exc.reason)
            continue
        assert line_of.get(i) == encode_event(ev), (doc, rejected.get(i))
    assert len(batch.index) > 500 and len(rejected) > 300  # both fates exercised


def test_a_text_value_holding_the_cut_is_encoded_on_its_own(event_factory: Any) -> None:
    """The batch encoder cuts one orjson output between objects; a value with ``},{``
    would fool the cut, and must not."""
    docs = [event_factory(gateway_id="a},{b"), event_factory(), event_factory(model='m"},{"x')]
    batch = encode_docs(docs)
    assert batch.lines == [encode_event(validate_event(d)) for d in docs]


def test_valid_events_are_the_models_events(event_factory: Any) -> None:
    docs = [event_factory(ts=(NOW - timedelta(minutes=k)).isoformat()) for k in range(50)]
    events = ValidEvents(NOW)
    events.extend(encode_docs(docs, now=NOW))
    assert list(events) == [validate_event(d, now=NOW) for d in docs]
    assert events[3] == validate_event(docs[3], now=NOW)
    assert events[-2:] == [validate_event(d, now=NOW) for d in docs[-2:]]
    assert len(events) == 50 and events.models == [d["model"] for d in docs]


def test_an_empty_batch_is_empty() -> None:
    batch = encode_docs([], now=datetime.now(UTC))
    assert (batch.index, batch.lines, batch.rejects) == ([], [], [])
