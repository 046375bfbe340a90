"""The dict path's fast half (``encode_values_fast``, msgspec.convert) against the model.

``encode_docs`` first hands a batch of dicts to ``schemas.batch.encode_values_fast``
and judges only what it refuses with pydantic-core and the model. Python
values are where msgspec and pydantic could part: subclasses of int and str,
numpy scalars, bools where ints are due, NaN and infinities, keys that are
not text, huge values under unknown keys. Each doc's fate through
``encode_docs`` (and through the fast half, where it takes it) must be its
fate through ``validate_event`` alone, with ``encode_event``'s exact bytes.
"""

from __future__ import annotations

import enum
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import numpy as np
import pytest

from schemas.batch import encode_values_fast, pack_values_fast
from schemas.batch_docs import encode_docs
from schemas.codec import encode_event, validate_event
from schemas.errors import InvalidEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Count(int):
    pass


class Loud(int):
    """An int subclass that answers comparisons its own way."""

    def __le__(self, other: object) -> bool:
        return True

    def __gt__(self, other: object) -> bool:
        return False


class Version(enum.IntEnum):
    ONE = 1


class Code(enum.IntEnum):
    OK = 200


class Text(str):
    pass


class Ms(float):
    pass


#: Values put in a field of a valid doc, one at a time.
VALUES: list[Any] = [
    Count(5),
    Loud(5),
    Version.ONE,
    Code.OK,
    True,
    False,
    np.int64(5),
    np.int32(200),
    np.float64(12.5),
    np.bool_(True),
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    5,
    5.0,
    2**70,
    Decimal("5"),
    Text("ok"),
    Text("gw"),
    Ms(12.5),
    "ok",
    "error",
    "timeout",
    None,
    b"gw",
    "12345678-ABCD-5678-1234-567812345678",
    UUID("12345678-1234-5678-1234-567812345678"),
    NOW - timedelta(hours=1),
    "2026-03-01T11:00:00.123456Z",
    [1],
    {"a": 1},
]

#: Unknown keys (the model ignores them) and what they hold.
EXTRAS: list[dict[Any, Any]] = [
    {"pad": 1},
    {"pad": float("nan")},
    {"pad": 2**200},
    {"pad": [[[[[[[[[[[]]]]]]]]]]]},
    {"pad": "x" * 100_000},
    {"pad": {"nested": list(range(10_000))}},
    {"pad": object()},
    {1: "int key"},
    {None: "none key"},
    {("a", "b"): "tuple key"},
    {b"bytes": "bytes key"},
]


def _doc(factory: Any, k: int) -> dict[str, Any]:
    ts = (NOW - timedelta(seconds=k * 3.5)).isoformat().replace("+00:00", "Z")
    return dict(factory(ts=ts, model=f"m/{k % 3}"))


def _alone(doc: Any) -> tuple[str, bytes | tuple[str, str]]:
    try:
        return "ok", encode_event(validate_event(doc, now=NOW))
    except InvalidEvent as exc:
        return "bad", (exc.field, exc.reason)


def _fates(docs: list[Any]) -> list[tuple[str, bytes | tuple[str, str]]]:
    batch = encode_docs(docs, now=NOW)
    out: dict[int, tuple[str, bytes | tuple[str, str]]] = {}
    for i, line in zip(batch.index, batch.lines, strict=True):
        out[i] = ("ok", line)
    for i, exc in batch.rejects:
        out[i] = ("bad", (exc.field, exc.reason))
    assert sorted(out) == list(range(len(docs)))
    return [out[i] for i in range(len(docs))]


def _fast_fates(docs: list[Any]) -> list[int]:
    """What the fast half accepted must be the model's event, byte for byte."""
    valid, others = encode_values_fast(docs, now=NOW)
    assert sorted([*valid.index, *others]) == list(range(len(docs)))
    for i, line in zip(valid.index, valid.lines, strict=True):
        assert _alone(docs[i]) == ("ok", line), docs[i]
    return valid.index


@pytest.mark.parametrize("field", ["schema_version", "http_status", "input_tokens", "latency_ms"])
def test_each_python_value_in_a_numeric_field(event_factory: Any, field: str) -> None:
    docs = []
    for k, value in enumerate(VALUES):
        doc = _doc(event_factory, k)
        doc[field] = value
        docs.append(doc)
    assert _fates(docs) == [_alone(d) for d in docs]
    _fast_fates(docs)


@pytest.mark.parametrize("field", ["event_id", "ts", "gateway_id", "status", "stream", "ttft_ms"])
def test_each_python_value_in_another_field(event_factory: Any, field: str) -> None:
    docs = []
    for k, value in enumerate(VALUES):
        doc = _doc(event_factory, k)
        doc[field] = value
        docs.append(doc)
    assert _fates(docs) == [_alone(d) for d in docs]
    _fast_fates(docs)


def test_an_int_subclass_schema_version_is_refused_as_the_model_refuses_it(
    event_factory: Any,
) -> None:
    """msgspec turns an int subclass into an int: the fast half must not take it."""
    docs = [_doc(event_factory, k) for k in range(20)]
    docs[4]["schema_version"] = Version.ONE
    docs[9]["schema_version"] = Count(1)
    fast = _fast_fates(docs)
    assert 4 not in fast and 9 not in fast and len(fast) == 18
    fates = _fates(docs)
    assert fates[4][0] == fates[9][0] == "bad" and fates == [_alone(d) for d in docs]


def test_unknown_keys_of_any_kind_are_ignored_as_the_model_ignores_them(
    event_factory: Any,
) -> None:
    docs = [{**_doc(event_factory, k), **extra} for k, extra in enumerate(EXTRAS)]
    assert _fates(docs) == [_alone(d) for d in docs]
    # Text keys with any value: the fast half takes them (the values are never read).
    assert _fast_fates(docs) == [k for k, e in enumerate(EXTRAS) if all(type(x) is str for x in e)]


def test_a_batch_of_plain_dicts_is_taken_whole_by_the_fast_half(event_factory: Any) -> None:
    docs = [_doc(event_factory, k) for k in range(500)]
    valid, others = encode_values_fast(docs, now=NOW)
    assert others == [] and valid.index == list(range(500))
    assert valid.lines == [encode_event(validate_event(d, now=NOW)) for d in docs]
    assert valid.model == [d["model"] for d in docs]


def test_random_python_damage_has_the_fate_it_has_alone(event_factory: Any) -> None:
    rng = random.Random(11)
    docs: list[Any] = []
    for k in range(2_000):
        doc = _doc(event_factory, k)
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            doc[rng.choice(sorted(doc))] = rng.choice(VALUES)
        if rng.random() < 0.05:
            doc.update(rng.choice(EXTRAS))
        if rng.random() < 0.01:
            doc = rng.choice([7, None, "event", [doc]])
        docs.append(doc)
    fates = _fates(docs)
    assert fates == [_alone(d) for d in docs]
    assert 800 < sum(f[0] == "ok" for f in fates) < 2_000
    assert len(_fast_fates(docs)) > 800


def _per_model(docs: list[Any]) -> dict[str, list[bytes]]:
    """Each model's events as the model encodes them, in input order."""
    out: dict[str, list[bytes]] = {}
    for d in docs:
        out.setdefault(d["model"], []).append(encode_event(validate_event(d, now=NOW)))
    return out


def test_packed_values_are_each_models_lines_in_order(event_factory: Any) -> None:
    docs = [_doc(event_factory, k) for k in range(500)]
    packed = pack_values_fast(docs, now=NOW)
    assert packed is not None
    got: dict[str, list[bytes]] = {}
    for model, value in packed:
        assert not value.endswith(b"\n")
        got.setdefault(model, []).extend(value.split(b"\n"))
    assert got == _per_model(docs)
    assert len(packed) == 3  # one value per model: the batch fits a record


def test_packed_values_stay_under_the_record_bound(event_factory: Any) -> None:
    docs = [_doc(event_factory, k) for k in range(300)]
    line = len(encode_event(validate_event(docs[0], now=NOW)))
    packed = pack_values_fast(docs, now=NOW, max_bytes=20 * line)
    assert packed is not None
    assert all(len(v) <= 20 * line for _, v in packed)
    assert len(packed) > 3
    got: dict[str, list[bytes]] = {}
    for model, value in packed:
        got.setdefault(model, []).extend(value.split(b"\n"))
    assert got == _per_model(docs)


@pytest.mark.parametrize(
    "damage",
    [
        {"status": "nope"},  # a field rule: rejected
        {"ttft_ms": 10_000.0, "latency_ms": 5.0},  # a cross-field rule: rejected
        {"event_id": UUID("12345678-1234-5678-1234-567812345678")},  # valid, the model's path
        {"schema_version": Count(1)},  # an int subclass: the model refuses it
    ],
)
def test_a_batch_with_one_event_not_taken_as_it_is_is_not_packed(
    event_factory: Any, damage: dict[str, Any]
) -> None:
    docs = [_doc(event_factory, k) for k in range(50)]
    docs[37].update(damage)
    assert pack_values_fast(docs, now=NOW) is None
    assert pack_values_fast(docs[:37], now=NOW) is not None
