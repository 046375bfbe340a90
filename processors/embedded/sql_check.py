"""The contract's rules in SQL, for the lines that certainly keep them: ingest at engine speed.

``schemas/`` stays the one definition of a valid event. This is a
conservative shortcut in front of it: a line passes here only if it is a
flat JSON object in the plain form gateways write (exactly the 16 fields,
each once; no backslash, no control character, no nesting; numbers without
exponent; durations with at most three decimals; ``ts`` as
``YYYY-MM-DDTHH:MM:SS[.ffffff]`` with ``Z`` or ``+00:00``) *and* keeps every
rule of ``schemas.event.RequestEvent`` (bounds, enums, cross-field rules, the
time range against the same ``now``). Every other line, valid or not, goes to
the batch validator (``schemas.batch``), which decides it and gives the
reasons users see. So this SQL may send a valid line the slow way, never
accept an invalid one or store other values than the model would:

* within that plain form, the text of a value is what the model parses:
  JSON integers for the integer fields, decimal numbers for the durations
  (parsed exactly, ``precise_float_parsing``), and strings without escapes,
  whose length in code points is ``lengthUTF8`` of valid UTF-8;
* a duration with at most three decimals is its own ``round(v, 3)`` (the
  double nearest a 3-decimal number rounds back to it), so the model's
  rounding changes nothing;
* ``ts`` is parsed to the microsecond, checked by formatting it back (no
  February 30th, no leap second), truncated to the millisecond, and
  compared with ``now`` in integer microseconds, as ``schemas.batch`` does.

``tests/integration/embedded/test_sql_check.py`` runs the batch validator's
own hostile corpus through both and checks that whatever passes here is valid
with the same values.
"""

from __future__ import annotations

from datetime import timedelta

from schemas.codec import MAX_EVENT_BYTES
from schemas.event import (
    ERROR_TYPES,
    FUTURE_TOLERANCE,
    MAX_DURATION_MS,
    MAX_EVENT_AGE,
    MAX_TOKENS,
    RequestEvent,
)

__all__ = ["FIELDS", "sql_string", "stage_valid_sql"]

FIELDS: tuple[str, ...] = tuple(RequestEvent.model_fields)
_FUTURE_US = FUTURE_TOLERANCE // timedelta(microseconds=1)
_AGE_US = MAX_EVENT_AGE // timedelta(microseconds=1)

_W = r"[ \t\r]*"  # JSON whitespace (a line holds no newline)
_TEXT = r'"([^"\\\x00-\x1f]*)"'  # a string without escapes or control characters
_OPT_TEXT = r'(null|"[^"\\\x00-\x1f]*")'
_DURATION = r"(?:0|[1-9][0-9]{0,7})(?:\.[0-9]{1,3})?"
_TOKENS = r"(0|[1-9][0-9]{0,8})"
#: The value pattern of each field, in the contract's order; one group each but
#: ``schema_version`` (the literal 1).
_VALUES: dict[str, str] = {
    "event_id": r'"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"',
    "schema_version": "1",
    "ts": r'"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?)'
    r'(?:Z|\+00:00)"',
    "gateway_id": _TEXT,
    "region": _OPT_TEXT,
    "model": _TEXT,
    "provider": _TEXT,
    "stream": "(true|false)",
    "status": '"(ok|error)"',
    "error_type": '(null|"(?:' + "|".join(ERROR_TYPES) + ')")',
    "http_status": "([1-5][0-9]{2})",
    "ttft_ms": f"(null|{_DURATION})",
    "latency_ms": f"({_DURATION})",
    "input_tokens": _TOKENS,
    "output_tokens": _TOKENS,
    "cached_input_tokens": _TOKENS,
}
assert tuple(_VALUES) == FIELDS, "the SQL rules must cover exactly the model's fields"
#: A whole line: the object with the fields in the contract's order (as every
#: encoder in this repository writes them), nothing else.
_LINE = (
    "^"
    + _W
    + r"\{"
    + (_W + "," + _W).join(f'"{name}"{_W}:{_W}{value}' for name, value in _VALUES.items())
    + _W
    + r"\}"
    + _W
    + "$"
)
#: The values' types once the line matched ``_LINE`` (which fixed each JSON type).
_TUPLE = (
    "Tuple(event_id String, ts String, gateway_id String, region Nullable(String), "
    "model String, provider String, stream Bool, status String, error_type Nullable(String), "
    "http_status UInt16, ttft_ms Nullable(Float64), latency_ms Float64, input_tokens UInt64, "
    "output_tokens UInt64, cached_input_tokens UInt64)"
)


def sql_string(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stage_valid_sql(raw_table: str, stage_table: str) -> str:
    """``INSERT`` the lines of ``raw_table`` (n, line) that pass, as rows of ``stage_table``.

    ``match`` (no capture groups: a DFA pass) checks the form and each
    value's JSON type; ``JSONExtract`` then reads the values, parsed exactly,
    and the bounds, lengths and cross-field rules are plain comparisons.
    Parameter: ``now_us`` (Int64, the validation's ``now`` in unix
    microseconds). A row's ``pos`` is its line number.
    """
    return f"""
INSERT INTO {stage_table} (pos, event_id, ts, gateway_id, region, model, provider, stream,
    status, error_type, http_status, ttft_ms, latency_ms, input_tokens, output_tokens,
    cached_input_tokens)
SELECT n, UUIDStringToNum(e.event_id), fromUnixTimestamp64Milli(ms, 'UTC'), e.gateway_id,
    e.region, e.model, e.provider, e.stream, e.status, e.error_type, e.http_status, e.ttft_ms,
    e.latency_ms, e.input_tokens, e.output_tokens, e.cached_input_tokens
FROM (
    SELECT n, e,
        parseDateTime64BestEffortOrNull(e.ts, 6, 'UTC') AS parsed,
        intDiv(toUnixTimestamp64Micro(parsed), 1000) AS ms
    FROM (
        SELECT n, JSONExtract(line, '{_TUPLE}') AS e
        FROM {raw_table}
        WHERE length(line) <= {MAX_EVENT_BYTES} AND isValidUTF8(line)
            AND match(line, {sql_string(_LINE)})
    )
)
WHERE lengthUTF8(e.gateway_id) BETWEEN 1 AND 128
    AND (e.region IS NULL OR lengthUTF8(e.region) <= 128)
    AND lengthUTF8(e.model) BETWEEN 1 AND 200
    AND lengthUTF8(e.provider) BETWEEN 1 AND 100
    AND (e.status = 'ok') = (e.error_type IS NULL)
    AND e.latency_ms <= {MAX_DURATION_MS}
    AND (e.ttft_ms IS NULL OR e.ttft_ms <= e.latency_ms)
    AND e.input_tokens <= {MAX_TOKENS} AND e.output_tokens <= {MAX_TOKENS}
    AND e.cached_input_tokens <= e.input_tokens
    AND isNotNull(parsed)
    AND formatDateTime(parsed, '%Y-%m-%dT%H:%i:%S') = substring(e.ts, 1, 19)
    AND ms * 1000 - {{now_us:Int64}} <= {_FUTURE_US}
    AND {{now_us:Int64}} - ms * 1000 <= {_AGE_US}
"""
