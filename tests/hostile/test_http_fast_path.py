"""Bodies where the HTTP door's raw-bytes path (msgspec) and its value path (orjson) meet.

The door takes the usual events straight from the body's bytes
(``schemas.batch.encode_lines_fast`` / ``encode_array_fast``) and decodes
only the rest to values for the model. Each body here is judged by
``parse_events`` and by the definition, one line or item at a time; the
accepted events (their exact bytes), the rejected ones (index, line, field,
reason) and their order must be the same.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from body_judge import check_array, check_ndjson

import collector.http.body as body_module
from collector.http.body import BodyError, parse_events
from schemas.codec import encode_event, validate_event

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(factory: Any, k: int, **changes: Any) -> dict[str, Any]:
    ts = (NOW - timedelta(seconds=k, microseconds=k * 37)).isoformat().replace("+00:00", "Z")
    return {**factory(ts=ts, model=f"m/{k % 7}"), **changes}


def test_unknown_fields_msgspec_would_skip_unchecked(event_factory: Any) -> None:
    """Values orjson refuses under a key the contract does not have: rejected, as alone."""
    body = orjson.dumps(_event(event_factory, 1))[:-1]
    lines = [
        orjson.dumps(_event(event_factory, 0)),
        body + b',"pad":1e400}',
        body + b',"pad":"\xff"}',
        body + b',"pad":' + b"[" * 5000 + b"]" * 5000 + b"}",
        body + b',"pad":{"ok":[1,2,3]}}',
        orjson.dumps(_event(event_factory, 2)),
    ]
    good, bad = check_ndjson(b"\n".join(lines), NOW)
    assert len(good) == 3 and [b[1] for b in bad] == [2, 3, 4]


def test_cross_field_breaks_spread_over_chunks_of_an_array(event_factory: Any) -> None:
    """Every item is an object of the contract's fields (msgspec reads the whole array), some
    break a rule only the column checks see: they are judged in order among the others."""
    chunk = body_module._CHUNK
    n = 2 * chunk + 17
    items = [_event(event_factory, k) for k in range(n)]
    for at in (0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, n - 1):
        items[at] = {**items[at], "status": "error"}  # error_type is then required
    for at in (5, chunk + 5):
        items[at] = {**items[at], "cached_input_tokens": 10**6}
    for at in (7, 2 * chunk + 3):
        items[at] = {**items[at], "event_id": items[at]["event_id"].upper()}  # valid
    good, bad = check_array(items, NOW)
    assert len(good) == n - 9 and [b[0] for b in bad][:3] == [0, 1, 5]


def test_an_array_with_an_item_of_another_shape_is_read_by_orjson(event_factory: Any) -> None:
    items: list[Any] = [_event(event_factory, k) for k in range(30)]
    items[3] = {**items[3], "pad": [1, {"a": None}]}
    items[11] = [items[11]]
    items[12] = None
    good, bad = check_array(items, NOW)
    assert len(good) == 28 and [b[0] for b in bad] == [11, 12]


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"{}," * 3 + b"1e400]",
        b'[{"pad":"\xff"}]',
        b"\xef\xbb\xbf[]",
        b"[] []",
        b"[{},]",
    ],
)
def test_a_body_orjson_refuses_is_a_400_whatever_msgspec_thinks(body: bytes) -> None:
    with pytest.raises(BodyError) as err:
        parse_events(body, "json", source="t", now=NOW)
    assert err.value.status == 400 and "malformed JSON" in err.value.message


def test_the_usual_bodies_pass_on_canonical_bytes(event_factory: Any) -> None:
    """Already canonical lines go on as they are; others are the model's bytes exactly."""
    docs = [_event(event_factory, k) for k in range(40)]
    canonical = [encode_event(validate_event(d, now=NOW)) for d in docs]
    for body in (b"\n".join(canonical), b"\n".join(orjson.dumps(d) for d in docs) + b"\n"):
        parsed = parse_events(body, "ndjson", source="t", now=NOW)
        assert parsed.events.lines == canonical and parsed.rejected_count == 0
    parsed = parse_events(orjson.dumps(docs), "json", source="t", now=NOW)
    assert parsed.events.lines == canonical and parsed.events.models == [d["model"] for d in docs]
