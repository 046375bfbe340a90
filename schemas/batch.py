"""Validate a batch of encoded events at once, into columns.

``RequestEvent`` (``schemas.event``) stays the one definition of a valid
event. Validating through it costs a model instance and several Python
validators per event (~12-20 µs). Here each line is parsed and checked in
compiled code by msgspec (a ``Struct`` built from the model's own field
types and bounds: ~1 µs an event, no dict in between), the timestamps are
parsed and the durations rounded for the whole column with numpy, and the
cross-field rules run in one short Python loop. Whatever this fast path
refuses is handed to ``validate_event``/``decode_event`` for the exact
field and words users see everywhere else, so the fast path only needs to
be a subset of the model; ``tests/unit/schemas/test_batch.py`` checks, over
valid and hostile inputs, that both paths accept exactly the same events
with the same values.

``encode_lines`` (and ``encode_array`` for a JSON array body) run the same
checks and hand the valid events on as their wire bytes, ``encode_event``'s
exactly: the canonical values are put in the decoded rows column by column,
and the whole batch is encoded by one msgspec call (or, when every line was
already canonical, the input lines are passed on as they are). The HTTP door
uses them, so a request of a thousand events costs a handful of calls into
compiled code rather than a dict and a model call per event.

The fast path takes an object with the contract's fields only: a field it
does not know sends the line to the model's path (which ignores the field),
because msgspec skips an unknown value without checking it the way orjson
does (a number out of range, invalid UTF-8, nesting past orjson's limit).
"""

from __future__ import annotations

import operator
import re
import types
import typing
import warnings
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import groupby
from typing import Annotated, Any, Literal, Union

import annotated_types as at
import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import AfterValidator
from pydantic.fields import FieldInfo

from schemas.codec import MAX_EVENT_BYTES, decode_event, encode_event
from schemas.errors import InvalidEvent
from schemas.event import (
    _RFC3339,
    FUTURE_TOLERANCE,
    MAX_EVENT_AGE,
    RequestEvent,
)
from schemas.event_record import MAX_RECORD_BYTES, pack_lines

__all__ = [
    "EncodedBatch",
    "EventColumns",
    "ValidBatch",
    "encode_array_fast",
    "encode_lines",
    "encode_lines_fast",
    "encode_values_fast",
    "pack_values_fast",
    "round3",
    "validate_lines",
]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _run_of(rx: re.Pattern[str]) -> re.Pattern[str]:
    """``rx`` repeated over lines: one call checks a whole column joined by newlines."""
    return re.compile(f"(?:(?:{rx.pattern})\n)*(?:{rx.pattern})")


_UUID_RUN = _run_of(_UUID)
_RFC3339_RUN = _run_of(_RFC3339)


def _matching(
    values: list[str], rx: re.Pattern[str], run: re.Pattern[str]
) -> tuple[str, list[bool] | None]:
    """The column joined by newlines, and which values fully match ``rx`` (None: all).

    The pattern's matches cannot span a newline, and a value holding one
    adds a line, which the count catches; so the joined text matches ``run``
    exactly when every value matches ``rx``.
    """
    joined = "\n".join(values)
    if joined.count("\n") == len(values) - 1 and run.fullmatch(joined):
        return joined, None
    return joined, [rx.fullmatch(v) is not None for v in values]


def _uuid_column(joined: str, n: int) -> bool:
    """True when each of the ``n`` values joined by newlines is an 8-4-4-4-12 hex UUID.

    ``_UUID``'s answer for the whole column, by slices of the text (C, no
    regex): every value 36 long with its hyphens and the newlines in their
    places, and the 32 n other characters hex digits (deleting the marks
    leaves 32 n characters; deleting the hex digits too leaves none).
    """
    dashes = "-" * n
    if not n or len(joined) != 37 * n - 1 or joined[36::37] != "\n" * (n - 1):
        return False
    if any(joined[k::37] != dashes for k in (8, 13, 18, 23)) or not joined.isascii():
        return False
    text = joined.encode("ascii")
    return len(text.translate(None, b"-\n")) == 32 * n and not text.translate(None, _UUID_CHARS)


_UUID_CHARS = b"0123456789abcdefABCDEF-\n"
#: The characters of a UTC RFC 3339 stamp that are not digits, and the newline.
_STAMP_MARKS = b"-T:.Z\n"


def _utc_stamp_length(joined: str, n: int) -> int | None:
    """The length of every stamp when all are ``YYYY-MM-DDTHH:MM:SS[.f...]Z`` of one length.

    ``_RFC3339``'s answer for the usual column (one form for the whole
    batch), by slices of the text: the marks in their places, and every
    other character an ASCII digit (deleting the marks leaves exactly the
    digits' count). None: the column takes the regex.
    """
    if not n or (len(joined) + 1) % n:
        return None
    size = (len(joined) + 1) // n - 1
    if size < 20 or size == 21:
        return None
    step = size + 1
    marks = [(4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (size - 1, "Z")]
    if size > 20:
        marks.append((19, "."))
    if joined[size::step] != "\n" * (n - 1) or any(joined[k::step] != c * n for k, c in marks):
        return None
    if not joined.isascii():
        return None
    digits = joined.encode("ascii").translate(None, _STAMP_MARKS)
    if len(digits) != (size - len(marks)) * n or not digits.isdigit():
        return None
    return size


def _utc_stamp_forms(stamps: list[str]) -> bool:
    """Whether every stamp is of a ``_utc_stamp_length`` form, of lengths that differ.

    Gateways write whole seconds without a fraction (``...:05Z``) and the
    others with one, so a batch mixes two or three lengths: sorted by
    length (in C), each length's stamps are checked as one column. Any
    doubt, and the caller takes the regex for the whole column.
    """
    ordered = sorted(stamps, key=len)
    lengths = list(map(len, ordered))
    start, n = 0, len(ordered)
    while start < n:
        end = bisect_right(lengths, lengths[start], lo=start)
        joined = "\n".join(ordered[start:end])
        if _utc_offset_ends(joined, end - start):
            # ``+00:00`` for ``Z``: the same instant in the form checked below.
            joined = joined.replace("+00:00", "Z")
        if _utc_stamp_length(joined, end - start) is None:
            return False
        start = end
    return True


def _utc_offset_ends(joined: str, n: int) -> bool:
    """Whether each of the ``n`` values joined by newlines ends in ``+00:00``, its only one."""
    return (
        joined.endswith("+00:00")
        and joined.count("+00:00") == n
        and joined.count("+00:00\n") == n - 1
    )


def _utc_stamp_texts(stamps: list[str], size: int) -> list[str] | None:
    """``_ts_texts`` of stamps of one ``_utc_stamp_length``, from their text (C, no parse).

    The instant is the text itself: truncated to the millisecond it is the
    first 23 characters and ``000Z``; whole seconds drop the fraction. None
    for a form with fewer than 3 fraction digits (``_ts_texts`` then).
    """
    n = len(stamps)
    if size == 20:
        return stamps
    if size < 24:
        return None
    src = "\n".join(stamps).encode()
    out = bytearray(b"0" * (28 * n - 1))
    out[27::28] = b"\n" * (n - 1)
    out[26::28] = b"Z" * n
    for k in range(23):
        out[k::28] = src[k :: size + 1]
    return out.decode().replace(".000000Z", "Z").split("\n")


def _wire_type(annotation: Any, metadata: Sequence[Any] = ()) -> Any:
    """The msgspec type of a pydantic annotation with its constraints.

    Only what the model uses is translated (optional, literals, strings and
    numbers with length and range bounds); anything else raises here, at
    import, rather than letting the two definitions drift apart.
    """
    meta: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, at.MinLen):
            meta["min_length"] = m.min_length
        elif isinstance(m, at.MaxLen):
            meta["max_length"] = m.max_length
        elif isinstance(m, at.Ge):
            meta["ge"] = m.ge
        elif isinstance(m, at.Le):
            meta["le"] = m.le
        elif isinstance(m, FieldInfo):
            return _wire_type(annotation, [*m.metadata, *metadata[1:]])
        elif type(m).__name__ in ("Strict", "AllowInfNan") or isinstance(m, AfterValidator):
            # msgspec is strict by nature; JSON carries no inf or NaN;
            # rounding is done for the whole column (``round3``).
            continue
        else:
            raise TypeError(f"no msgspec form for the constraint {m!r}")
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return _wire_type(base, [*extra, *metadata])
    if origin in (Union, types.UnionType):
        return Union[tuple(_wire_type(a) for a in typing.get_args(annotation))]  # noqa: UP007
    if origin is Literal or annotation in (str, int, float, bool, type(None)):
        return Annotated[annotation, msgspec.Meta(**meta)] if meta else annotation
    raise TypeError(f"no msgspec form for the type {annotation!r}")


def _wire_fields() -> list[tuple[str, Any]]:
    """``RequestEvent``'s fields as msgspec types, minus what runs after parsing.

    Taken from the model itself, so the two cannot drift: the same types and
    bounds. ``event_id`` and ``ts`` are text here, checked against their
    patterns for the whole column at once (``_matching``; one regex call per
    event would cost more than the rest of the decoding), parsed and
    range-checked in ``validate_lines`` and ``_ts_column``; the durations
    drop their rounding (done for the whole column by ``round3``). Every
    field is required, as in the model; an unknown field sends the line to
    the model's path (see the module's docstring).
    """
    out: list[tuple[str, Any]] = []
    for name, info in RequestEvent.model_fields.items():
        if name == "event_id":
            # The canonical form only: any other form the model accepts
            # (braces, urn:, no hyphens) takes the model's path.
            out.append((name, str))  # its pattern: ``_matching``, for the column
        elif name == "ts":
            out.append((name, str))
        else:
            out.append((name, _wire_type(info.annotation, info.metadata)))
    return out


_Wire: Any = msgspec.defstruct("_Wire", _wire_fields(), gc=False, forbid_unknown_fields=True)
_DECODE = msgspec.json.Decoder(_Wire).decode
_DECODE_ARRAY = msgspec.json.Decoder(list[_Wire]).decode
#: One line per row, in the fields' order: the bytes orjson writes for the
#: same values (``tests/unit/schemas/test_encode_lines.py`` holds them equal).
_ENCODE_LINES = msgspec.json.Encoder().encode_lines
_ENCODE = msgspec.json.Encoder().encode
_WIRE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)
#: The same fields for values in memory (``encode_values_fast``): unknown keys
#: are ignored there, as the model ignores them, since no value of theirs is read.
_Values: Any = msgspec.defstruct("_Values", _wire_fields(), gc=False)
_VALUES = list[_Values]
_VERSION = operator.itemgetter("schema_version")
_MODEL = operator.attrgetter("model")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FUTURE_US = FUTURE_TOLERANCE // timedelta(microseconds=1)
_AGE_US = MAX_EVENT_AGE // timedelta(microseconds=1)


def _us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(slots=True)
class EventColumns:
    """Valid events as columns; ``index`` is each event's place in the input batch."""

    index: list[int] = field(default_factory=list)
    event_id: list[bytes] = field(default_factory=list)  # 16 bytes, UUID order
    ts_ms: list[int] = field(default_factory=list)  # unix ms, UTC
    gateway_id: list[str] = field(default_factory=list)
    region: list[str | None] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    provider: list[str] = field(default_factory=list)
    stream: list[bool] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    error_type: list[str | None] = field(default_factory=list)
    http_status: list[int] = field(default_factory=list)
    ttft_ms: list[float | None] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    cached_input_tokens: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.index)


@dataclass(slots=True)
class ValidBatch:
    events: EventColumns
    #: (index in the input, the rule it broke), in input order.
    rejects: list[tuple[int, InvalidEvent]]


def _ts_ms(raw: str, now_us: int) -> int | None:
    """Unix ms of an RFC 3339 timestamp (already matched) inside the accepted range, or None.

    The same steps as ``RequestEvent``'s: parse, require an offset, truncate
    to the millisecond, then compare with ``now`` to the microsecond; done in
    integers (any offset subtracts correctly from the epoch).
    """
    try:
        parsed = datetime.fromisoformat(raw.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    delta = parsed - _EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if ms * 1000 - now_us > _FUTURE_US or now_us - ms * 1000 > _AGE_US:
        return None
    return ms


_UTC_OFFSETS = frozenset({"+00:00", "-00:00"})
#: Stands in for a time that does not match the pattern: out of range, so
#: the event takes the model's path, which gives the reason.
_NO_TS = "1970-01-01T00:00:00Z"


def _ts_column(stamps: list[str], now_us: int) -> list[int | None]:
    """``_ts_ms`` of every timestamp (already matched), in one numpy parse where it can.

    The usual forms end in ``Z`` or ``+00:00``; numpy parses what precedes
    that as Python does (same fields, same range checks, fractions truncated
    to the microsecond), in C, for the whole column. Any other form (another
    offset, a lowercase ``t``) takes ``_ts_ms``, and so does the whole column
    if numpy refuses it (a day out of range). When every stamp ends in ``Z``
    (the usual batch), the column is cut from its joined text in C.
    """
    n = len(stamps)
    joined = "\n".join(stamps)
    # A matched stamp holds no newline and at most one Z, its last character: then
    # n - 1 of them end before a newline and the last one ends the text.
    if (
        n
        and joined[-1] == "Z"
        and "t" not in joined
        and joined.count("Z") == n
        and joined.count("Z\n") == n - 1
    ):
        return _ts_in_range(joined.replace("Z", "").split("\n"), now_us, stamps)
    if n and "t" not in joined and _utc_offset_ends(joined, n):
        return _ts_in_range(joined.replace("+00:00", "").split("\n"), now_us, stamps)
    out: list[int | None] = [None] * n
    fast: list[int] = []
    cores: list[str] = []
    for j, s in enumerate(stamps):
        if "t" in s:
            out[j] = _ts_ms(s, now_us)
        elif s[-1] == "Z":
            fast.append(j)
            cores.append(s[:-1])
        elif s[-6:] in _UTC_OFFSETS:
            fast.append(j)
            cores.append(s[:-6])
        else:
            out[j] = _ts_ms(s, now_us)
    if not fast:
        return out
    for j, value in zip(fast, _ts_in_range(cores, now_us, [stamps[j] for j in fast]), strict=True):
        out[j] = value
    return out


def _ts_in_range(cores: list[str], now_us: int, stamps: list[str]) -> list[int | None]:
    """Unix ms of UTC times without their offset (numpy), None outside the accepted range.

    ``stamps`` are the same times with their offset, for ``_ts_ms`` if numpy
    refuses the column.
    """
    try:
        with warnings.catch_warnings():
            # numpy warns about a time zone before it refuses some odd stamps
            # (a non-ASCII digit at the end); the fallback below decides them.
            warnings.simplefilter("ignore", UserWarning)
            us = np.array(cores, dtype="datetime64[us]").astype(np.int64)
    except ValueError:
        return [_ts_ms(s, now_us) for s in stamps]
    return _in_range(us // 1000, now_us)


def _in_range(ms: npt.NDArray[np.int64], now_us: int) -> list[int | None]:
    """Each unix ms, or None where it is outside the accepted range around ``now``."""
    inside = (ms * 1000 - now_us <= _FUTURE_US) & (now_us - ms * 1000 <= _AGE_US)
    if inside.all():
        return ms.tolist()
    return [v if ok else None for v, ok in zip(ms.tolist(), inside.tolist(), strict=True)]


#: Where the digits of ``YYYY-MM-DDTHH:MM:SS`` are, and the marks between them.
_PLAIN_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_PLAIN_MARKS = [(4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":")]
#: The most years one column's fast path spans (events are days old at most).
_PLAIN_YEARS = 4


@lru_cache(maxsize=64)
def _month_starts(first_year: int, years: int) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 of the 1st of each month of ``years`` years, and of the month after."""
    days = [
        (date(first_year + k // 12, k % 12 + 1, 1) - date(1970, 1, 1)).days
        for k in range(12 * years)
    ]
    days.append((date(first_year + years - 1, 12, 31) - date(1970, 1, 1)).days + 1)
    out = np.array(days, dtype=np.int64)
    out.flags.writeable = False
    return out


def _plain_utc_ms(stamps: list[str], now_us: int) -> list[int | None] | None:
    """``_ts_column`` of a column of one plain UTC form, from the digits; None for any other.

    The form: ``YYYY-MM-DDTHH:MM:SS``, then ``.`` and 1 to 6 digits or
    nothing, then ``Z`` or ``+00:00``; one length for the whole column (what
    gateways and our own encoder write), within a few years. The text is
    read as a grid of bytes, a row per stamp: every mark in its column,
    every other byte an ASCII digit, every field in its calendar range (the
    days of each month from ``datetime.date``), and the instant is computed
    from the fields, the fraction truncated to the millisecond. Anything
    else (a day the month does not have, another offset, a lowercase ``t``)
    returns None, and the caller parses the column (``_ts_column``), which
    decides it exactly as the model does; ``tests/unit/schemas/test_batch.py``
    compares the two.
    """
    n = len(stamps)
    if not n:
        return None
    size = len(stamps[0])
    suffix = "Z" if stamps[0].endswith("Z") else "+00:00"
    fraction = size - 19 - len(suffix)  # 0, or the dot and its digits
    if fraction < 0 or fraction == 1 or fraction > 7:
        return None
    joined = "\n".join(stamps) + "\n"
    if len(joined) != n * (size + 1) or not joined.isascii():
        return None
    # n rows of size + 1 bytes, each ending in the one newline it may hold
    # (checked below): so each row is one stamp, and every stamp is of this size.
    grid = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).reshape(n, size + 1)
    marks = [*_PLAIN_MARKS, *([(19, ".")] if fraction else [])]
    marks += [(size - len(suffix) + k, c) for k, c in enumerate(suffix)] + [(size, "\n")]
    want = np.frombuffer("".join(c for _, c in marks).encode("ascii"), dtype=np.uint8)
    if not (grid[:, [k for k, _ in marks]] == want).all():
        return None
    digits = grid[:, _PLAIN_DIGITS + list(range(20, 19 + fraction))] - np.uint8(48)
    if (digits > 9).any():  # below '0' wraps around too
        return None
    # One contiguous row per digit place: each field is a few row operations.
    d = np.ascontiguousarray(digits.T, dtype=np.int32)
    year = ((d[0] * 10 + d[1]) * 10 + d[2]) * 10 + d[3]
    month, day, hour, minute, second = (d[k] * 10 + d[k + 1] for k in range(4, 14, 2))
    first_year = int(year.min())
    years = int(year.max()) - first_year + 1
    if not (
        first_year >= 1
        and years <= _PLAIN_YEARS
        and ((month >= 1) & (month <= 12)).all()
        and (day >= 1).all()
        and (hour <= 23).all()
        and (minute <= 59).all()
        and (second <= 59).all()
    ):
        return None
    starts = _month_starts(first_year, years)
    at = (year - first_year) * 12 + month - 1
    first = starts[at]
    if (day > starts[at + 1] - first).any():
        return None
    seconds = ((first + (day - 1)) * 24 + hour) * 3600 + (minute * 60 + second)
    ms = seconds * 1000
    if fraction:
        # The fraction's first three digits are its milliseconds (truncated).
        kept = min(fraction - 1, 3)
        milli = d[14]
        for k in range(15, 14 + kept):
            milli = milli * 10 + d[k]
        ms += milli * 10 ** (3 - kept)
    return _in_range(ms, now_us)


def round3(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``round(v, 3)`` of every value, exactly as Python rounds, for a column at once.

    ``rint(v * 1000) / 1000`` is Python's answer wherever ``v * 1000`` lies
    clearly away from a half: the product is within half a unit in the last
    place of the exact one, so it is on the same side of the half, and
    dividing the integer by 1000 gives the double nearest the decimal, as
    ``round`` does. Values within a few units of a half (true ties among
    them, which ``round`` settles on the exact binary value) take ``round``.
    Durations are bounded by a day, far inside the exact integer range.
    """
    scaled = values * 1000.0
    out = np.rint(scaled) / 1000.0
    frac = scaled - np.floor(scaled)
    near = np.abs(frac - 0.5) <= 4 * np.spacing(scaled)
    for j in np.flatnonzero(near).tolist():
        out[j] = round(float(values[j]), 3)
    return out


def _round_durations(rows: list[Any]) -> tuple[list[float], list[float | None], bool]:
    """Every row's durations kept to the microsecond, as the model does; and whether
    that changed any of them (the usual batch's are already rounded)."""
    n = len(rows)
    raw_latency = [r.latency_ms for r in rows]
    latency = round3(np.array(raw_latency, np.float64)).tolist()
    raw_ttft = [r.ttft_ms for r in rows]
    if None in raw_ttft:
        values = np.fromiter((0.0 if t is None else t for t in raw_ttft), np.float64, n)
        rounded = round3(values).tolist()
        ttft = [None if t is None else v for t, v in zip(raw_ttft, rounded, strict=True)]
    else:
        ttft = round3(np.array(raw_ttft, np.float64)).tolist()
    return latency, ttft, latency != raw_latency or ttft != raw_ttft


def _decode_wires(lines: Sequence[bytes]) -> tuple[list[Any], list[int], list[int]]:
    """The rows msgspec decodes, their indices, and the indices of the lines it refused.

    The usual batch (every line short enough and decoded) is one ``map`` in C.
    """
    n = len(lines)
    if n and max(map(len, lines)) <= MAX_EVENT_BYTES:
        try:
            return list(map(_DECODE, lines)), list(range(n)), []
        except _WIRE_ERRORS:
            pass
    wires: list[Any] = []
    where: list[int] = []
    slow: list[int] = []
    for i, line in enumerate(lines):
        if len(line) <= MAX_EVENT_BYTES:
            try:
                wires.append(_DECODE(line))
                where.append(i)
                continue
            except _WIRE_ERRORS:
                pass
        slow.append(i)
    return wires, where, slow


@dataclass(slots=True)
class _Judged:
    """The rows the fast path keeps, with the values the model would give them.

    Rows it refuses (a pattern, the time range or a cross-field rule broken,
    or a form it does not take as it is) are left out: the model judges them.
    """

    wires: list[Any]
    where: list[int]
    refused: list[int]
    event_id: list[str]  # as given (the canonical pattern, either case)
    ts: list[str]  # as given
    ts_ms: list[int]
    latency_ms: list[float]  # rounded
    ttft_ms: list[float | None]  # rounded
    #: every stamp's length if all are of one ``_utc_stamp_length`` form, else None
    ts_size: int | None = None
    #: whether rounding changed a duration of the batch (of a kept row or not)
    rounded: bool = True


def _judge(wires: list[Any], where: list[int], now_us: int) -> _Judged:
    """Patterns and time for whole columns, the cross-field rules in one pass."""
    latency, ttft, rounded = _round_durations(wires)
    n = len(wires)
    raw_ts = [w.ts for w in wires]
    ts_size = _utc_stamp_length("\n".join(raw_ts), n)
    stamps = _plain_utc_ms(raw_ts, now_us)
    if stamps is None:
        all_utc = ts_size is not None or _utc_stamp_forms(raw_ts)
        ts_ok = None if all_utc else _matching(raw_ts, _RFC3339, _RFC3339_RUN)[1]
        checked_ts = raw_ts
        if ts_ok is not None:
            checked_ts = [t if good else _NO_TS for t, good in zip(raw_ts, ts_ok, strict=True)]
        stamps = _ts_column(checked_ts, now_us)
    event_id = [w.event_id for w in wires]
    if not _uuid_column("\n".join(event_id), n):
        _, ids_ok = _matching(event_id, _UUID, _UUID_RUN)
        if ids_ok is not None:
            stamps = [t if good else None for t, good in zip(stamps, ids_ok, strict=True)]
    ok = [
        t is not None and (w.status == "ok") != (w.error_type is not None)
        # ``RequestEvent._consistent``, on rounded durations
        and (f is None or f <= lat) and w.cached_input_tokens <= w.input_tokens
        for w, t, f, lat in zip(wires, stamps, ttft, latency, strict=True)
    ]  # fmt: skip
    # ``ts_ms`` holds None only in rows that are not ``ok``, which ``_only`` drops.
    got = _Judged(wires, where, [], event_id, raw_ts, stamps, latency, ttft, ts_size, rounded)  # type: ignore[arg-type]
    return got if all(ok) else _only(got, ok)


def _only(got: _Judged, ok: list[bool]) -> _Judged:
    """``got`` without the rows not ``ok``, which join ``refused`` (kept in input order)."""
    keep = [j for j, good in enumerate(ok) if good]
    refused = [got.where[j] for j, good in enumerate(ok) if not good]
    return _Judged(
        [got.wires[j] for j in keep],
        [got.where[j] for j in keep],
        sorted(got.refused + refused) if got.refused else refused,
        [got.event_id[j] for j in keep],
        [got.ts[j] for j in keep],
        [got.ts_ms[j] for j in keep],
        [got.latency_ms[j] for j in keep],
        [got.ttft_ms[j] for j in keep],
        got.ts_size,
        got.rounded,
    )


def validate_lines(lines: Sequence[bytes], *, now: datetime | None = None) -> ValidBatch:
    """Validate encoded events (one JSON object each); valid ones as columns.

    Every input is either in ``events`` (with its index) or in ``rejects``
    with the same field and reason ``decode_event`` gives it.
    """
    now = now or datetime.now(UTC)
    wires, where, slow = _decode_wires(lines)
    cols = EventColumns()
    if wires:
        got = _judge(wires, where, _us(now))
        slow.extend(got.refused)
        wires = got.wires
        # bytes.fromhex skips the newlines: 16 bytes an event, in order.
        flat = bytes.fromhex("\n".join(got.event_id).replace("-", ""))
        cols = EventColumns(
            index=got.where,
            event_id=[flat[k : k + 16] for k in range(0, len(flat), 16)],
            ts_ms=got.ts_ms,
            gateway_id=[w.gateway_id for w in wires],
            region=[w.region for w in wires],
            model=[w.model for w in wires],
            provider=[w.provider for w in wires],
            stream=[w.stream for w in wires],
            status=[w.status for w in wires],
            error_type=[w.error_type for w in wires],
            http_status=[w.http_status for w in wires],
            ttft_ms=got.ttft_ms,
            latency_ms=got.latency_ms,
            input_tokens=[w.input_tokens for w in wires],
            output_tokens=[w.output_tokens for w in wires],
            cached_input_tokens=[w.cached_input_tokens for w in wires],
        )
    rejects: list[tuple[int, InvalidEvent]] = []
    if slow:
        slow.sort()
        merged: list[tuple[int, RequestEvent]] = []
        for i in slow:
            try:
                merged.append((i, decode_event(lines[i], now=now)))
            except InvalidEvent as exc:
                rejects.append((i, exc))
        if merged:
            cols = _merge(cols, merged)
    return ValidBatch(cols, rejects)


@dataclass(slots=True)
class EncodedBatch:
    """Valid events as their wire bytes; ``index`` is each one's place in the input."""

    index: list[int]
    #: each valid event's compact JSON, byte for byte ``encode_event`` of the model's event
    lines: list[bytes]
    model: list[str]
    #: (index in the input, the rule it broke), in input order
    rejects: list[tuple[int, InvalidEvent]]


def _ts_texts(ts_ms: list[int]) -> list[str]:
    """What orjson (``OPT_UTC_Z``) writes for each UTC datetime of these unix ms.

    orjson writes six fraction digits when the microsecond is not zero and
    none when it is; numpy formats the whole column in C, and the fraction
    of whole seconds is dropped from the joined text (all stamps have the
    same length, 1970-9999, so ``.000000Z`` can only be such a fraction).
    """
    if not ts_ms:
        return []
    texts: list[str] = np.datetime_as_string(
        np.array(ts_ms, dtype="datetime64[ms]"), unit="us"
    ).tolist()
    return ("Z\n".join(texts) + "Z").replace(".000000Z", "Z").split("\n")


def _canonical(got: _Judged) -> bool:
    """Put the model's values in the kept rows where they differ; whether any did.

    ``encode_event`` writes the event id in lower case, the time in UTC to
    the millisecond, the durations rounded: only a column that differs from
    them is written into the rows.
    """
    wires = got.wires
    changed = False
    event_id = "\n".join(got.event_id).lower().split("\n")
    if event_id != got.event_id:
        changed = True
        for w, v in zip(wires, event_id, strict=True):
            w.event_id = v
    ts = _utc_stamp_texts(got.ts, got.ts_size) if got.ts_size else None
    if ts is None:
        ts = _ts_texts(got.ts_ms)
    if ts != got.ts:
        changed = True
        for w, v in zip(wires, ts, strict=True):
            w.ts = v
    if got.rounded:
        changed = True
        for w, d, t in zip(wires, got.latency_ms, got.ttft_ms, strict=True):
            w.latency_ms = d
            w.ttft_ms = t
    return changed


def _encode_judged(got: _Judged, lines: Sequence[bytes] | None) -> EncodedBatch:
    """The kept rows' wire bytes: the canonical values put in, one msgspec call for all.

    When no column differed from the model's values and ``lines`` (the
    input) already are those bytes, they are kept as they are (each line is
    one JSON object, so equal concatenations mean equal lines).
    """
    wires = got.wires
    if not wires:
        return EncodedBatch([], [], [], [])
    changed = _canonical(got)
    blob = _ENCODE_LINES(wires)
    out: list[bytes] | None = None
    if lines is not None and not changed:
        given = [lines[i] for i in got.where] if len(got.where) < len(lines) else list(lines)
        if len(blob) == sum(map(len, given)) + len(given) and blob == b"\n".join(given) + b"\n":
            out = given
    if out is None:
        # A JSON text holds no raw newline (it is escaped in strings): one cut per row.
        out = blob.split(b"\n")
        out.pop()
    return EncodedBatch(got.where, out, [w.model for w in wires], [])


def encode_lines_fast(lines: Sequence[bytes], *, now: datetime) -> tuple[EncodedBatch, list[int]]:
    """The lines the fast path accepts, encoded; and the indices of all the others.

    For a caller that judges the others its own way (the HTTP door keeps its
    dead-letter economy for them); ``encode_lines`` judges them by the model.
    """
    wires, where, slow = _decode_wires(lines)
    got = _judge(wires, where, _us(now))
    if got.refused:
        slow = sorted(slow + got.refused)
    return _encode_judged(got, lines), slow


def encode_array_fast(body: bytes, *, now: datetime) -> tuple[EncodedBatch, list[int]] | None:
    """``encode_lines_fast`` for a JSON array of events, decoded by one msgspec call.

    None when msgspec does not take the body as an array of the contract's
    objects (anything malformed, one item of another shape, a single
    object): the caller decodes it its own way.
    """
    try:
        wires = _DECODE_ARRAY(body)
    except _WIRE_ERRORS:
        return None
    got = _judge(wires, list(range(len(wires))), _us(now))
    return _encode_judged(got, None), got.refused


def _convert_wires(docs: Sequence[Any]) -> tuple[list[Any], list[int], list[int]]:
    """The rows msgspec builds from values in memory, their indices, and the others'.

    ``schema_version`` must be an ``int`` itself (the model's rule: an int
    subclass is refused), which msgspec does not tell apart: that type is
    checked for the whole batch in one pass in C. Anything else msgspec
    refuses (a ``UUID`` or ``datetime`` object, a float subclass such as
    numpy's, a non-str key, not a dict at all) is left to the model.
    """
    try:
        if set(map(type, map(_VERSION, docs))) == {int}:
            return msgspec.convert(docs, _VALUES), list(range(len(docs))), []
    except Exception:  # any refusal: item by item below
        pass
    wires: list[Any] = []
    where: list[int] = []
    slow: list[int] = []
    for i, doc in enumerate(docs):
        try:
            if type(doc["schema_version"]) is int:
                wires.append(msgspec.convert(doc, _Values))
                where.append(i)
                continue
        except Exception:  # the model says why
            pass
        slow.append(i)
    return wires, where, slow


def _writable(wire: Any) -> bool:
    try:
        _ENCODE(wire)
    except TypeError:
        return False
    return True


def encode_values_fast(docs: Sequence[Any], *, now: datetime) -> tuple[EncodedBatch, list[int]]:
    """``encode_lines_fast`` for events already in memory (dicts): what it accepts, encoded.

    msgspec builds the rows from the values in one call (``msgspec.convert``,
    compiled: the same types and bounds as the lines), then the same column
    checks and the same encoding as for lines. The indices of every other
    item are returned for the model's path (``schemas.batch_docs.encode_docs``).
    """
    wires, where, slow = _convert_wires(docs)
    got = _judge(wires, where, _us(now))
    try:
        encoded = _encode_judged(got, None)
    except TypeError:
        # A value msgspec keeps but cannot write (a str subclass): its rows go to the model.
        got = _only(got, list(map(_writable, got.wires)))
        try:
            encoded = _encode_judged(got, None)
        except Exception:  # anything else: the model judges the batch
            return EncodedBatch([], [], [], []), list(range(len(docs)))
    if got.refused:
        slow = sorted(slow + got.refused)
    return encoded, slow


def pack_values_fast(
    docs: Sequence[Any], *, now: datetime, max_bytes: int = MAX_RECORD_BYTES
) -> list[tuple[str, bytes]] | None:
    """Every doc valid by the fast path, packed: ``(model, NDJSON value)`` pairs; else None.

    ``encode_values_fast``'s checks and bytes, with the lines of each model
    encoded together straight into record values (docs/record-format.md) of
    at most ``max_bytes``, in input order within a model. A producer that
    packs per partition anyway (the emitter) is spared a ``bytes`` object
    per event and the join that would undo it. None when any doc is not
    taken as it is (invalid, or left to the model's path): the caller then
    judges the batch with ``encode_docs``, which says why.
    """
    try:
        wires, where, slow = _convert_wires(docs)
        if slow or not wires:
            return None
        got = _judge(wires, where, _us(now))
        if got.refused:
            return None
        _canonical(got)
        by_model = sorted(wires, key=_MODEL) if len(set(map(_MODEL, wires))) > 1 else wires
        out: list[tuple[str, bytes]] = []
        for model, rows in groupby(by_model, _MODEL):
            value = _ENCODE_LINES(list(rows))[:-1]
            if len(value) <= max_bytes:
                out.append((model, value))
            else:
                out.extend((model, v) for v in pack_lines(value.split(b"\n"), max_bytes))
    except (TypeError, ValueError):
        # A value msgspec keeps but cannot write (a str subclass), or any other surprise:
        # ``encode_docs`` sorts it out one row at a time.
        return None
    return out


def encode_lines(lines: Sequence[bytes], *, now: datetime | None = None) -> EncodedBatch:
    """Validate encoded events and encode the valid ones, ``encode_event``'s bytes exactly.

    Like ``validate_lines`` (the same decisions, the same reasons from
    ``decode_event`` for what it rejects), without columns nor event
    objects for the valid events the fast path takes.
    """
    now = now or datetime.now(UTC)
    fast, slow = encode_lines_fast(lines, now=now)
    if not slow:
        return fast
    rows = list(zip(fast.index, fast.lines, fast.model, strict=True))
    for i in slow:
        try:
            ev = decode_event(lines[i], now=now)
        except InvalidEvent as exc:
            fast.rejects.append((i, exc))
            continue
        rows.append((i, encode_event(ev), ev.model))
    rows.sort(key=lambda r: r[0])
    return EncodedBatch(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], fast.rejects
    )


def _merge(cols: EventColumns, extra: list[tuple[int, RequestEvent]]) -> EventColumns:
    """``cols`` with the events the model accepted on the slow path, in input order."""
    rows = [(i, _row_of(ev)) for i, ev in extra]
    names = [f for f in EventColumns.__slots__ if f != "index"]
    fast = [(i, tuple(getattr(cols, f)[k] for f in names)) for k, i in enumerate(cols.index)]
    both = sorted(fast + rows, key=lambda item: item[0])
    out = EventColumns(index=[i for i, _ in both])
    for n, name in enumerate(names):
        setattr(out, name, [row[n] for _, row in both])
    return out


def _row_of(ev: RequestEvent) -> tuple[Any, ...]:
    """An accepted event's values in the order of ``EventColumns``' fields (after index)."""
    return (
        ev.event_id.bytes,
        _us(ev.ts) // 1000,
        ev.gateway_id,
        ev.region,
        ev.model,
        ev.provider,
        ev.stream,
        ev.status,
        ev.error_type,
        ev.http_status,
        ev.ttft_ms,
        ev.latency_ms,
        ev.input_tokens,
        ev.output_tokens,
        ev.cached_input_tokens,
    )
