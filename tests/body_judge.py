"""A body judged by the HTTP door and by the definition, one line or item at a time.

Shared by the hostile body tests: ``parse_events`` must accept the same
events (their exact bytes) and reject the same ones (index, line, field,
reason), in the same order, as ``decode_event`` / ``validate_event`` on each
line or item alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from collector.http.body import Parsed, parse_events
from schemas.codec import decode_event, encode_event, iter_ndjson, validate_event
from schemas.errors import InvalidEvent

#: (accepted events' bytes, rejected (index, line, field, reason))
Judged = tuple[list[bytes], list[tuple[int, int | None, str, str]]]
ALL = 10**6  # keep every reject, so that every one can be compared


def got(parsed: Parsed) -> Judged:
    """What the door decided."""
    bad = [
        (r.index, line, r.field, r.reason)
        for r, line in zip(parsed.rejected, parsed.lines, strict=True)
    ]
    assert parsed.rejected_count == len(bad)
    return parsed.events.lines, bad


def check_ndjson(body: bytes, now: datetime) -> Judged:
    """Assert the door judges an NDJSON body as the definition does; return the judgement."""
    good: list[bytes] = []
    bad: list[tuple[int, int | None, str, str]] = []
    for index, (lineno, line) in enumerate(iter_ndjson([body])):
        try:
            good.append(encode_event(decode_event(line, now=now)))
        except InvalidEvent as exc:
            bad.append((index, lineno, exc.field, exc.reason))
    assert got(parse_events(body, "ndjson", source="t", now=now, keep=ALL)) == (good, bad)
    return good, bad


def check_array(items: list[Any], now: datetime) -> Judged:
    """Assert the door judges a JSON array of ``items`` as the definition does."""
    good: list[bytes] = []
    bad: list[tuple[int, int | None, str, str]] = []
    for index, item in enumerate(items):
        try:
            good.append(encode_event(validate_event(item, now=now)))
        except InvalidEvent as exc:
            bad.append((index, None, exc.field, exc.reason))
    parsed = parse_events(orjson.dumps(items), "json", source="t", now=now, keep=ALL)
    assert got(parsed) == (good, bad)
    return good, bad
