"""Validate a batch of encoded events at once, into columns.

``RequestEvent`` (``schemas.event``) stays the one definition of a valid
event. Validating through it costs a model instance and several Python
validators per event (~12-20 µs). Here the same field rules run as one
pydantic-core call over the whole batch (a TypedDict schema built from the
same bounds), and the rules pydantic-core cannot say (RFC 3339 time range,
the cross-field rules, strict types of ``event_id`` and ``schema_version``)
run in one short Python loop. Whatever this fast path refuses is handed to
``validate_event`` for the exact field and words users see everywhere else,
and ``tests/unit/schemas/test_batch.py`` checks, over valid and hostile
inputs, that both paths accept exactly the same events with the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from schemas.codec import MAX_EVENT_BYTES, decode_event, validate_event
from schemas.errors import InvalidEvent
from schemas.event import (
    _RFC3339,
    FUTURE_TOLERANCE,
    MAX_EVENT_AGE,
    RequestEvent,
)

__all__ = [
    "EncodedBatch",
    "EventColumns",
    "ValidBatch",
    "encode_docs",
    "round3",
    "validate_docs",
    "validate_lines",
]

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: The model's RFC 3339 expression, anchored (pydantic-core's regex searches).
_RFC3339_ANCHORED = f"^(?:{_RFC3339.pattern})$"


def _row_fields() -> dict[str, Any]:
    """``RequestEvent``'s fields, as a TypedDict's, minus what runs in Python.

    Taken from the model itself, so the two cannot drift: the same types and
    bounds, without the Python validators. ``event_id`` and ``ts`` are text
    checked by a pattern here (their parsing and range are in ``_columns``
    and ``_ts_column``); the durations drop their rounding (done for the
    whole column by ``round3``).
    """
    fields: dict[str, Any] = {}
    for name, info in RequestEvent.model_fields.items():
        kept = [m for m in info.metadata if not isinstance(m, AfterValidator)]
        fields[name] = Annotated[(info.annotation, *kept)] if kept else info.annotation
    # The canonical form only: any other form the model accepts (braces, urn:,
    # no hyphens) takes the model's path, which gives the same 16 bytes.
    fields["event_id"] = Annotated[str, Field(strict=True, pattern=_UUID)]
    fields["ts"] = Annotated[str, Field(strict=True, pattern=_RFC3339_ANCHORED)]
    duration = Annotated[(float, *fields["latency_ms"].__metadata__)]
    fields["ttft_ms"] = duration | None
    return fields


_Row: Any = TypedDict("_Row", _row_fields())  # type: ignore[misc]
_ROWS = TypeAdapter(list[_Row])
_ONE = TypeAdapter(_Row)
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
#: Stands in for the time of a row that failed its field rules (never read).
_NO_TS = "1970-01-01T00:00:00Z"


def _ts_column(stamps: list[str], now_us: int) -> list[int | None]:
    """``_ts_ms`` of every timestamp (already matched), in one numpy parse where it can.

    The usual forms end in ``Z`` or ``+00:00``; numpy parses what precedes
    that as Python does (same fields, same range checks, fractions truncated
    to the microsecond), in C, for the whole column. Any other form (another
    offset, a lowercase ``t``) takes ``_ts_ms``, and so does the whole column
    if numpy refuses it (a day out of range).
    """
    out: list[int | None] = [None] * len(stamps)
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
    try:
        us = np.array(cores, dtype="datetime64[us]").astype(np.int64)
    except ValueError:
        for j in fast:
            out[j] = _ts_ms(stamps[j], now_us)
        return out
    ms = us // 1000
    inside = (ms * 1000 - now_us <= _FUTURE_US) & (now_us - ms * 1000 <= _AGE_US)
    for j, value, ok in zip(fast, ms.tolist(), inside.tolist(), strict=True):
        if ok:
            out[j] = value
    return out


def _event_row(ev: RequestEvent) -> tuple[dict[str, Any], int]:
    """A row and its ts in ms from an event the model accepted (the fallback path)."""
    row = ev.model_dump()
    row["event_id"] = ev.event_id.hex
    return row, _us(ev.ts) // 1000


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


def _round_durations(rows: list[Any]) -> None:
    """Keep every row's durations to the microsecond, as the model does."""
    latency = round3(np.fromiter((r["latency_ms"] for r in rows), np.float64, len(rows)))
    ttft = np.fromiter(
        (np.nan if (t := r["ttft_ms"]) is None else t for r in rows), np.float64, len(rows)
    )
    ttft = round3(np.nan_to_num(ttft, nan=0.0)).tolist()
    for r, lat, tt in zip(rows, latency.tolist(), ttft, strict=True):
        r["latency_ms"] = lat
        if r["ttft_ms"] is not None:
            r["ttft_ms"] = tt


def _consistent(row: Any) -> bool:
    """The cross-field rules (``RequestEvent._consistent``), on rounded durations."""
    if (row["status"] == "ok") == (row["error_type"] is not None):
        return False
    ttft = row["ttft_ms"]
    if ttft is not None and ttft > row["latency_ms"]:
        return False
    return bool(row["cached_input_tokens"] <= row["input_tokens"])


def _columns(index: list[int], rows: list[Any], ts_ms: list[int]) -> EventColumns:
    return EventColumns(
        index=index,
        event_id=[bytes.fromhex(r["event_id"].replace("-", "")) for r in rows],
        ts_ms=ts_ms,
        gateway_id=[r["gateway_id"] for r in rows],
        region=[r["region"] for r in rows],
        model=[r["model"] for r in rows],
        provider=[r["provider"] for r in rows],
        stream=[r["stream"] for r in rows],
        status=[r["status"] for r in rows],
        error_type=[r["error_type"] for r in rows],
        http_status=[r["http_status"] for r in rows],
        ttft_ms=[r["ttft_ms"] for r in rows],
        latency_ms=[r["latency_ms"] for r in rows],
        input_tokens=[r["input_tokens"] for r in rows],
        output_tokens=[r["output_tokens"] for r in rows],
        cached_input_tokens=[r["cached_input_tokens"] for r in rows],
    )


def validate_lines(lines: Sequence[bytes], *, now: datetime | None = None) -> ValidBatch:
    """Validate encoded events (one JSON object each); valid ones as columns.

    Every input is either in ``events`` (with its index) or in ``rejects``
    with the same field and reason ``decode_event`` gives it.
    """
    now = now or datetime.now(UTC)
    docs: list[Any] = []
    where: list[int] = []
    rejects: list[tuple[int, InvalidEvent]] = []
    for i, line in enumerate(lines):
        doc: Any = None
        if len(line) <= MAX_EVENT_BYTES:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                doc = None
        if type(doc) is dict:
            docs.append(doc)
            where.append(i)
            continue
        try:
            decode_event(line, now=now)  # the reason, in the usual words
        except InvalidEvent as exc:
            rejects.append((i, exc))
            continue
        docs.append(orjson.loads(line))  # the model is the definition: let it decide
        where.append(i)
    return _validate_docs(docs, where, rejects, now)


def validate_docs(docs: Sequence[Any], *, now: datetime | None = None) -> ValidBatch:
    """Validate decoded events (a JSON body's items, an emitter's dicts); valid ones as columns.

    The same rules and reasons as ``validate_lines``, for values already in
    memory. A value the fast path does not take as it is (a ``datetime`` or
    ``UUID`` object, a NaN, anything but a ``dict``) goes to ``validate_event``,
    so the model decides exactly as it would for that value alone.
    """
    return _validate_docs(list(docs), list(range(len(docs))), [], now or datetime.now(UTC))


def _validate_docs(
    docs: list[Any], where: list[int], rejects: list[tuple[int, InvalidEvent]], now: datetime
) -> ValidBatch:
    kept = _judge(docs, where, rejects, now)
    return ValidBatch(
        _columns([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]), rejects
    )


def _judge(
    docs: list[Any], where: list[int], rejects: list[tuple[int, InvalidEvent]], now: datetime
) -> list[tuple[int, Any, int]]:
    """``(index, row, ts ms)`` of each valid doc, in input order; ``rejects`` completed.

    A row is a dict of the contract's fields in the model's order, with the
    durations rounded; ``event_id`` and ``ts`` are still the input's text
    (or, for a doc the model judged, its 32 hex digits and its datetime).
    """
    try:
        rows: list[Any] = _ROWS.validate_python(docs)
        bad: set[int] = set()
    except ValidationError as exc:
        bad = {int(e["loc"][0]) for e in exc.errors(include_url=False) if e["loc"]}
        rows = [None if j in bad else _ONE.validate_python(d) for j, d in enumerate(docs)]
    kept: list[tuple[int, Any, int]] = []
    judged_by_model = False
    now_us = _us(now)
    _round_durations([r for r in rows if r is not None])
    stamps = _ts_column([r["ts"] if r is not None else _NO_TS for r in rows], now_us)
    for j, doc in enumerate(docs):
        row = rows[j]
        if row is not None:
            ts_ms = stamps[j]
            if (
                ts_ms is not None
                and type(doc["event_id"]) is str
                and type(doc["schema_version"]) is int
                and _consistent(row)
            ):
                kept.append((where[j], row, ts_ms))
                continue
        judged_by_model = True
        try:
            ev = validate_event(doc, now=now)
        except InvalidEvent as exc:
            rejects.append((where[j], exc))
            continue
        kept.append((where[j], *_event_row(ev)))  # the model is the definition
    if judged_by_model and any(kept[k][0] > kept[k + 1][0] for k in range(len(kept) - 1)):
        kept.sort(key=lambda item: item[0])
    rejects.sort(key=lambda r: r[0])
    return kept


@dataclass(slots=True)
class EncodedBatch:
    """Valid events as their wire bytes; ``index`` is each one's place in the input."""

    index: list[int]
    #: each valid event's compact JSON, byte for byte ``encode_event`` of the model's event
    lines: list[bytes]
    model: list[str]
    #: (index in the input, the rule it broke), in input order
    rejects: list[tuple[int, InvalidEvent]]


def encode_docs(docs: Sequence[Any], *, now: datetime | None = None) -> EncodedBatch:
    """Validate decoded events like ``validate_docs``, and encode the valid ones.

    For the doors that only pass events on (the emitter, the HTTP door): the
    rows pydantic-core built are encoded as they are, with ``event_id`` and
    ``ts`` put in the model's canonical form, and no columns nor event
    objects are built.
    """
    rejects: list[tuple[int, InvalidEvent]] = []
    kept = _judge(list(docs), list(range(len(docs))), rejects, now or datetime.now(UTC))
    rows = [k[1] for k in kept]
    for row, ts in zip(rows, _ts_texts([k[2] for k in kept]), strict=True):
        eid = row["event_id"]
        row["event_id"] = eid.lower() if len(eid) == 36 else _uuid_text(eid)
        row["ts"] = ts
    return EncodedBatch(
        [k[0] for k in kept], _encode_rows(rows), [r["model"] for r in rows], rejects
    )


def _uuid_text(hex32: str) -> str:
    """The 8-4-4-4-12 form of 32 lower-case hex digits (``str(UUID)``)."""
    h = hex32
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _ts_texts(ts_ms: list[int]) -> list[str]:
    """What orjson (``OPT_UTC_Z``) writes for each UTC datetime of these unix ms.

    orjson writes six fraction digits when the microsecond is not zero and
    none when it is; numpy formats the whole column in C.
    """
    texts: list[str] = np.datetime_as_string(
        np.array(ts_ms, dtype="datetime64[ms]"), unit="us"
    ).tolist()
    return [t[:-7] + "Z" if t.endswith(".000000") else t + "Z" for t in texts]


#: Between two objects of a compact JSON array of flat objects, and nowhere else
#: unless a string value holds it.
_BETWEEN = b"},{"


def _encode_rows(rows: list[dict[str, Any]]) -> list[bytes]:
    """Each row's compact JSON: one ``orjson.dumps`` of the whole list, cut between objects.

    Each call of orjson costs far more than the bytes it writes for one
    small event (it starts from a fresh 4 KiB buffer). The rows are flat (no
    nested object or array), so each of the ``n - 1`` boundaries is one
    ``},{``; a text value holding ``},{`` adds one more, and then the cut
    would be wrong: each row is encoded on its own instead.
    """
    if not rows:
        return []
    parts = orjson.dumps(rows)[2:-2].split(_BETWEEN)
    if len(parts) != len(rows):
        return [orjson.dumps(r) for r in rows]
    return [b"{" + p + b"}" for p in parts]
