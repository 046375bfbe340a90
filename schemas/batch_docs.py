"""Validate a batch of events already in memory (dicts), and encode the valid ones.

``schemas.batch.validate_lines`` validates encoded lines (msgspec parses the
bytes straight into its ``Struct``). The doors also hold values: the
emitter's ``emit(dict)``, the items of a body the raw-bytes path refused,
mapped OTLP spans. For them ``encode_docs`` first runs
``schemas.batch.encode_values_fast`` (``msgspec.convert`` of the whole batch
into the same ``Struct``, the same column checks, one msgspec encode), then,
over what that refused, the same field rules as one pydantic-core call (a
TypedDict schema taken from ``RequestEvent``'s own fields and bounds), the
time range with the same numpy column parse as ``validate_lines``, and the
cross-field rules in one short Python pass. Whatever neither fast path takes
as it is (a ``datetime`` or ``UUID`` object, a NaN, any broken rule) is
judged by ``validate_event``, so the reasons are the model's words;
``tests/unit/schemas/test_encode_docs.py`` and ``test_encode_values.py`` hold
them to the same decisions and to ``encode_event``'s exact bytes over JSON
and Python values.

The valid events are encoded from the validated rows (one call per batch),
so the doors hand on bytes, never a model instance per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from schemas.batch import (
    _NO_TS,
    EncodedBatch,
    EventColumns,
    ValidBatch,
    _ts_column,
    _ts_texts,
    _us,
    encode_values_fast,
    round3,
)
from schemas.codec import validate_event
from schemas.errors import InvalidEvent
from schemas.event import _RFC3339, RequestEvent

__all__ = ["EncodedBatch", "encode_docs", "validate_docs"]

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


def _event_row(ev: RequestEvent) -> tuple[dict[str, Any], int]:
    """A row and its ts in ms from an event the model accepted (the fallback path)."""
    row = ev.model_dump()
    row["event_id"] = ev.event_id.hex
    return row, _us(ev.ts) // 1000


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


def encode_docs(docs: Sequence[Any], *, now: datetime | None = None) -> EncodedBatch:
    """Validate decoded events like ``validate_docs``, and encode the valid ones.

    For the doors that only pass events on (the emitter, the HTTP door). The
    usual dict goes through ``schemas.batch.encode_values_fast`` (msgspec
    builds the rows in one call, the batch is encoded in one more); the
    others through pydantic-core over the rest of the batch, whose rows are
    encoded as they are, with ``event_id`` and ``ts`` put in the model's
    canonical form. No columns nor event objects are built.
    """
    now = now or datetime.now(UTC)
    fast, others = encode_values_fast(docs, now=now)
    if not others:
        return fast
    rejects: list[tuple[int, InvalidEvent]] = []
    kept = _judge([docs[i] for i in others], others, rejects, now)
    rows = [k[1] for k in kept]
    for row, ts in zip(rows, _ts_texts([k[2] for k in kept]), strict=True):
        eid = row["event_id"]
        row["event_id"] = eid.lower() if len(eid) == 36 else _uuid_text(eid)
        row["ts"] = ts
    judged = EncodedBatch(
        [k[0] for k in kept], _encode_rows(rows), [r["model"] for r in rows], rejects
    )
    if not fast.index:
        return judged
    both = sorted(
        [
            *zip(fast.index, fast.lines, fast.model, strict=True),
            *zip(judged.index, judged.lines, judged.model, strict=True),
        ],
        key=lambda r: r[0],
    )
    return EncodedBatch([r[0] for r in both], [r[1] for r in both], [r[2] for r in both], rejects)


def _uuid_text(hex32: str) -> str:
    """The 8-4-4-4-12 form of 32 lower-case hex digits (``str(UUID)``)."""
    h = hex32
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
