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
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union

import annotated_types as at
import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import AfterValidator
from pydantic.fields import FieldInfo

from schemas.codec import MAX_EVENT_BYTES, decode_event
from schemas.errors import InvalidEvent
from schemas.event import (
    _RFC3339,
    FUTURE_TOLERANCE,
    MAX_EVENT_AGE,
    RequestEvent,
)

__all__ = ["EventColumns", "ValidBatch", "round3", "validate_lines"]

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
    field is required, as in the model; unknown fields are ignored, as the
    model does.
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


_Wire: Any = msgspec.defstruct("_Wire", _wire_fields(), gc=False)
_DECODE = msgspec.json.Decoder(_Wire).decode
_WIRE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)
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


def _round_durations(rows: list[Any]) -> tuple[list[float], list[float | None]]:
    """Every row's durations kept to the microsecond, as the model does."""
    n = len(rows)
    latency = round3(np.fromiter((r.latency_ms for r in rows), np.float64, n)).tolist()
    raw_ttft = [r.ttft_ms for r in rows]
    ttft = round3(np.fromiter((0.0 if t is None else t for t in raw_ttft), np.float64, n)).tolist()
    return latency, [None if t is None else v for t, v in zip(raw_ttft, ttft, strict=True)]


def _consistent(
    status: str, error_type: str | None, ttft: float | None, latency: float, cached: int, inp: int
) -> bool:
    """The cross-field rules (``RequestEvent._consistent``), on rounded durations."""
    if (status == "ok") == (error_type is not None):
        return False
    if ttft is not None and ttft > latency:
        return False
    return cached <= inp


def validate_lines(lines: Sequence[bytes], *, now: datetime | None = None) -> ValidBatch:
    """Validate encoded events (one JSON object each); valid ones as columns.

    Every input is either in ``events`` (with its index) or in ``rejects``
    with the same field and reason ``decode_event`` gives it.
    """
    now = now or datetime.now(UTC)
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
    cols = EventColumns()
    if wires:
        latency, ttft = _round_durations(wires)
        raw_ts = [w.ts for w in wires]
        _, ts_ok = _matching(raw_ts, _RFC3339, _RFC3339_RUN)
        if ts_ok is not None:
            raw_ts = [t if good else _NO_TS for t, good in zip(raw_ts, ts_ok, strict=True)]
        stamps = _ts_column(raw_ts, _us(now))
        ids, ids_ok = _matching([w.event_id for w in wires], _UUID, _UUID_RUN)
        if ids_ok is None:
            # bytes.fromhex skips the newlines: 16 bytes an event, in order.
            flat = bytes.fromhex(ids.replace("-", ""))
            event_id = [flat[k : k + 16] for k in range(0, len(flat), 16)]
        else:
            event_id = [
                bytes.fromhex(w.event_id.replace("-", "")) if good else b""
                for w, good in zip(wires, ids_ok, strict=True)
            ]
            stamps = [t if good else None for t, good in zip(stamps, ids_ok, strict=True)]
        status = [w.status for w in wires]
        error_type = [w.error_type for w in wires]
        cached = [w.cached_input_tokens for w in wires]
        inputs = [w.input_tokens for w in wires]
        ok = [
            t is not None and _consistent(s, e, f, lat, c, n)
            for t, s, e, f, lat, c, n in zip(
                stamps, status, error_type, ttft, latency, cached, inputs, strict=True
            )
        ]
        if not all(ok):
            # A rare row the fast path refuses: the model gives its reason.
            slow.extend(where[j] for j, good in enumerate(ok) if not good)
            keep = [j for j, good in enumerate(ok) if good]
            wires = [wires[j] for j in keep]
            event_id = [event_id[j] for j in keep]
            where = [where[j] for j in keep]
            stamps = [stamps[j] for j in keep]
            latency = [latency[j] for j in keep]
            ttft = [ttft[j] for j in keep]
            status = [status[j] for j in keep]
            error_type = [error_type[j] for j in keep]
            cached = [cached[j] for j in keep]
            inputs = [inputs[j] for j in keep]
        cols = EventColumns(
            index=where,
            event_id=event_id,
            ts_ms=stamps,  # type: ignore[arg-type]  # no None left
            gateway_id=[w.gateway_id for w in wires],
            region=[w.region for w in wires],
            model=[w.model for w in wires],
            provider=[w.provider for w in wires],
            stream=[w.stream for w in wires],
            status=status,
            error_type=error_type,
            http_status=[w.http_status for w in wires],
            ttft_ms=ttft,
            latency_ms=latency,
            input_tokens=inputs,
            output_tokens=[w.output_tokens for w in wires],
            cached_input_tokens=cached,
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
