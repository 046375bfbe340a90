"""What of a rejected input may be kept: the contract's fields, never text beside them.

Events carry no prompt or completion text, but a *rejected* line can carry
anything an emitter put in it (a ``prompt`` field, a whole chat transcript).
Every place that keeps rejected bytes (the dead-letter topic, the
``telemetry.rejected`` table) keeps ``redact_rejected(raw)`` instead of ``raw``:

* a JSON object: only the contract's field names (``RequestEvent.model_fields``);
  unknown fields are dropped (their names too: a key can be text). Contract
  fields are all scalars, so a nested object or array in one is kept as the
  placeholder ``"<object>"`` / ``"<array>"``; strings are cut to
  :data:`MAX_STRING_CHARS` characters plus ``…``. Re-serialised with orjson,
  in the input's key order.
* another JSON value: an array becomes ``"<array>"``, a string is cut as above,
  numbers, booleans and null are kept.
* not JSON at all: only the first :data:`MAX_PREFIX_BYTES` bytes (plus ``…``
  when cut), since text cannot be told from fields there.

The result is what an operator needs to see why the emitter's line failed
(the field and its value), and redacting a kept form again changes nothing,
so a dead letter read back into ``telemetry.rejected`` keeps the same bytes.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.event import RequestEvent

__all__ = ["CONTRACT_FIELDS", "MAX_PREFIX_BYTES", "MAX_STRING_CHARS", "redact_rejected"]

#: The field names a kept rejected object may carry.
CONTRACT_FIELDS: frozenset[str] = frozenset(RequestEvent.model_fields)
#: A string value longer than this is cut (every contract string is shorter).
MAX_STRING_CHARS = 256
#: What is kept of input that is not JSON.
MAX_PREFIX_BYTES = 256

_CUT = "…"
_CUT_BYTES = _CUT.encode()


def _cut(text: str) -> str:
    """At most ``MAX_STRING_CHARS`` characters, marked when cut."""
    if len(text) <= MAX_STRING_CHARS:
        return text
    return text[:MAX_STRING_CHARS] + _CUT


def _scalar(value: Any) -> Any:
    """A value as kept: strings cut, containers replaced by their type's placeholder."""
    if isinstance(value, dict):
        return "<object>"
    if isinstance(value, list):
        return "<array>"
    if isinstance(value, str):
        return _cut(value)
    return value  # int, float, bool, None: no room for text


def _prefix(raw: bytes) -> bytes:
    """The first ``MAX_PREFIX_BYTES`` bytes, marked when cut.

    The cut backs off to a UTF-8 character boundary, so decoding the kept
    bytes adds no replacement character and redacting them again keeps them.
    """
    if len(raw) <= MAX_PREFIX_BYTES:
        return raw
    end = MAX_PREFIX_BYTES
    while end > MAX_PREFIX_BYTES - 3 and raw[end] & 0xC0 == 0x80:
        end -= 1  # raw[end] continues a character: cut before that character
    return raw[:end] + _CUT_BYTES


def redact_rejected(raw: bytes) -> bytes:
    """The form of a rejected input that may be stored: see the module docstring."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _prefix(raw)
    if isinstance(parsed, dict):
        kept = {k: _scalar(v) for k, v in parsed.items() if k in CONTRACT_FIELDS}
        return orjson.dumps(kept)
    return orjson.dumps(_scalar(parsed))
