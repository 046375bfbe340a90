"""Embedded mode: bring hour buckets up to date from raw rows, then publish the stats.

Raw events in ``telemetry.requests`` are the durable log; the hour buckets in
``telemetry.stat_buckets`` are derived from them by the same aggregation core
the Faust workers use. Each bucket row records ``through``, the newest
``ingested_at`` it includes, and a refresh adds only newer rows of its key, so
a refresh interrupted at any point is simply run again: nothing is lost and
nothing is counted twice.

New rows are read as Arrow columns and folded with ``HourBucket.add_groups``
(one columnar add for all of them): no Python object per row. A ``Refresher``
keeps the window's buckets in memory between refreshes (``telemetry run``,
and the refreshes of one `telemetry ingest`), so a refresh reads only the
rows that are new, not the whole window's buckets again. That is right
because the process holding the embedded store is its only writer; a
refresh that fails drops what it holds and reads the buckets again next time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from processors.aggregate import (
    BucketKey,
    HourBucket,
    hour_of,
    hour_start,
    hourly_rows,
    rolling_rows,
    window_start,
)
from processors.aggregate.columns import BucketInputs
from processors.aggregate.window import window_start_hour
from processors.clickhouse import ClickHouse
from processors.publication import WATERMARK
from processors.sinks.stats import write_hourly, write_stats
from schemas.event import EXCLUDED_FROM_ERROR_RATE

__all__ = ["RefreshReport", "Refresher", "refresh", "unfolded_rows"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MAX = 2**63 - 1
#: Rows newer than the watermark, in the window: what the fold needs, as columns.
_NEW_ROWS = (
    "SELECT toString(model) AS model, toString(provider) AS provider, "
    "intDiv(toUnixTimestamp(toStartOfHour(ts)), 3600) AS hour, "
    "toUnixTimestamp64Milli(ingested_at) AS at, toString(status) AS status, "
    "toString(error_type) AS error_type, ttft_ms, latency_ms, input_tokens, output_tokens "
    "FROM telemetry.requests "
    "WHERE ingested_at > {low:DateTime64(3, 'UTC')} "
    "AND ingested_at <= {high:DateTime64(3, 'UTC')} "
    "AND ts >= {start:DateTime64(3, 'UTC')}"
)


@dataclass(frozen=True, slots=True)
class RefreshReport:
    as_of: datetime
    new_rows: int
    buckets_updated: int
    stats_rows: int
    hourly_rows: int


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _ms(dt: datetime) -> int:
    delta = _utc(dt) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class _Reader(Protocol):
    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]: ...


def unfolded_rows(ch: _Reader) -> int:
    """Raw events stored since the last refresh: the embedded pipeline's lag.

    Read-only (any reader: the store, or the control socket of its owner).
    """
    rows = ch.query(
        "SELECT count() FROM telemetry.requests "
        "WHERE ingested_at > parseDateTime64BestEffort({low:String}, 3, 'UTC')",
        {"low": _watermark(ch).isoformat()},  # a string: it may go over the control socket
    )
    return int(rows[0][0]) if rows else 0


def _watermark(ch: _Reader) -> datetime:
    rows = ch.query(
        "SELECT value FROM telemetry.pipeline_state FINAL WHERE name = {n:String}",
        {"n": WATERMARK},
    )
    return datetime.fromisoformat(rows[0][0]) if rows else _EPOCH


def _set_watermark(ch: ClickHouse, value: datetime) -> None:
    ch.insert("telemetry.pipeline_state", [(WATERMARK, value.isoformat())], ("name", "value"))


#: A bucket and its ``through`` (unix ms of the newest ``ingested_at`` it holds).
_Held = dict[BucketKey, tuple[HourBucket, int]]


def _load_buckets(ch: ClickHouse, since_hour: datetime) -> _Held:
    rows = ch.query(
        "SELECT model, provider, hour, through, hex(state) FROM telemetry.stat_buckets FINAL "
        "WHERE hour >= {since:DateTime64(3, 'UTC')}",
        {"since": since_hour},
    )
    out = {}
    for model, provider, hour, through, state in rows:
        bucket = HourBucket.from_bytes(bytes.fromhex(state))
        out[BucketKey(model, provider, hour_of(_utc(hour)))] = (bucket, _ms(through))
    return out


def _groups(table: pa.Table) -> tuple[np.ndarray, list[tuple[str, str, int]]]:
    """Each row's (model, provider, hour) as a group number, and the groups' keys."""
    model = pc.dictionary_encode(table.column("model")).combine_chunks()
    provider = pc.dictionary_encode(table.column("provider")).combine_chunks()
    hour = table.column("hour").to_numpy().astype(np.int64)
    low = int(hour.min())
    span = int(hour.max()) - low + 1
    m = model.indices.to_numpy().astype(np.int64)
    p = provider.indices.to_numpy().astype(np.int64)
    code = (m * len(provider.dictionary) + p) * span + (hour - low)
    codes, group = np.unique(code, return_inverse=True)
    models, providers = model.dictionary.to_pylist(), provider.dictionary.to_pylist()
    keys = []
    for c in codes.tolist():
        mp, h = divmod(c, span)
        mi, pi = divmod(mp, len(providers))
        keys.append((models[mi], providers[pi], low + h))
    return group.astype(np.intp), keys


def _tokens(table: pa.Table, name: str) -> np.ndarray:
    """A token column as int64, refusing (like the per-row fold) a stored value beyond it.

    Rows stored before the contract's bounds may hold up to 2^64 - 1; such a
    row must stop the refresh loudly (``telemetry run`` shows it in /readyz),
    not wrap to a negative count.
    """
    values = table.column(name).to_numpy()
    if values.dtype == np.uint64 and len(values) and int(values.max()) > _INT64_MAX:
        raise OverflowError(f"telemetry.requests.{name}: a stored value exceeds 2^63 - 1")
    return values.astype(np.int64)


def _inputs(table: pa.Table) -> BucketInputs:
    """The fold's columns (``BucketInputs``) from the rows read, without a Python object each."""
    status = table.column("status")
    error_type = table.column("error_type")
    excluded = pc.is_in(error_type, value_set=pa.array(sorted(EXCLUDED_FROM_ERROR_RATE)))
    return BucketInputs(
        ok=pc.equal(status, "ok").to_numpy(zero_copy_only=False),
        error=pc.equal(status, "error").to_numpy(zero_copy_only=False),
        excluded=pc.fill_null(excluded, False).to_numpy(zero_copy_only=False),
        ttft_ms=pc.fill_null(table.column("ttft_ms"), np.nan).to_numpy().astype(np.float64),
        latency_ms=table.column("latency_ms").to_numpy().astype(np.float64),
        input_tokens=_tokens(table, "input_tokens"),
        output_tokens=_tokens(table, "output_tokens"),
    )


class Refresher:
    """Refreshes of one store, keeping the window's buckets in memory between them.

    Only for the process that owns the store (the only writer of its
    buckets): ``telemetry run`` and one `telemetry ingest`.

    ``fold`` counts new rows into the buckets held in memory and writes
    nothing; ``refresh`` folds, then stores the buckets that changed, moves
    the watermark and publishes. A long ingest folds every so often (so no
    read holds more than that many rows) and refreshes once at the end: the
    store's buckets and watermark move together, so a process killed
    between folds loses only what it held in memory, and the next refresh
    reads those rows again from the unchanged watermark.
    """

    def __init__(self) -> None:
        self._held: _Held | None = None
        #: the newest ``ingested_at`` folded into ``_held``
        self._mark: datetime | None = None
        #: the watermark in the store, as this process last read or wrote it
        self._saved: datetime | None = None
        #: buckets folded into since they were last stored
        self._touched: set[BucketKey] = set()
        #: how many times the buckets were read from the store (tests look)
        self.loads = 0

    def fold(self, ch: ClickHouse, *, as_of: datetime | None = None) -> int:
        """Count the rows stored since the last fold into the held buckets; how many rows.

        Nothing is written: until ``refresh``, the counts live in memory only.
        """
        try:
            return self._fold(ch, as_of or datetime.now(UTC))
        except BaseException:
            self._forget()
            raise

    def refresh(self, ch: ClickHouse, *, as_of: datetime | None = None) -> RefreshReport:
        try:
            return self._refresh(ch, as_of or datetime.now(UTC))
        except BaseException:
            self._forget()
            raise

    def _forget(self) -> None:
        """Drop what is held: buckets may have been added to; read them again next time."""
        self._held = None
        self._mark = None
        self._saved = None
        self._touched = set()

    def _fold(self, ch: ClickHouse, as_of: datetime) -> int:
        start = window_start(as_of)
        if self._held is None:
            self._held = _load_buckets(ch, start)
            self._mark = self._saved = _watermark(ch)
            self._touched = set()
            self.loads += 1
        held = self._held
        low = self._mark
        assert low is not None  # set with ``_held``
        high_rows = ch.query("SELECT max(ingested_at) FROM telemetry.requests")
        high = _utc(high_rows[0][0]) if high_rows and high_rows[0][0] else low
        if high <= low:
            return 0
        table = ch.query_arrow(_NEW_ROWS, {"low": low, "high": high, "start": start})
        new_rows = int(table.num_rows)
        if new_rows:
            group, keys = _groups(table)
            targets: list[HourBucket] = []
            cutoffs: list[int] = []
            for model, provider, hour in keys:
                key = BucketKey(model, provider, hour)
                got = held.get(key)
                if got is None:
                    got = held[key] = (HourBucket(), 0)
                targets.append(got[0])
                cutoffs.append(got[1])
                self._touched.add(key)
            # Only rows newer than their bucket's ``through`` (a crash between
            # writing buckets and moving the watermark leaves some counted).
            at = table.column("at").to_numpy().astype(np.int64)
            newer = at > np.asarray(cutoffs, dtype=np.int64)[group]
            cols = _inputs(table)
            if not newer.all():
                cols = cols.take(np.flatnonzero(newer))
                group = group[newer]
            HourBucket.add_groups(targets, group, cols)
        self._mark = high
        return new_rows

    def _refresh(self, ch: ClickHouse, as_of: datetime) -> RefreshReport:
        if self._held is not None:
            first = window_start_hour(as_of)
            for key in [k for k in self._held if k.hour < first]:
                del self._held[key]
                self._touched.discard(key)
        new_rows = self._fold(ch, as_of)
        held = self._held
        assert held is not None and self._mark is not None  # set by _fold
        high = self._mark
        touched = {k: held[k][0] for k in self._touched if k in held}
        if touched:
            states = HourBucket.encode_many(list(touched.values()))
            ch.insert(
                "telemetry.stat_buckets",
                [
                    (k.model, k.provider, hour_start(k.hour), high, state)
                    for k, state in zip(touched, states, strict=True)
                ],
                ("model", "provider", "hour", "through", "state"),
            )
            for k, b in touched.items():
                held[k] = (b, _ms(high))
        if high != self._saved:
            _set_watermark(ch, high)
            self._saved = high
        self._touched = set()

        buckets = {k: b for k, (b, _) in held.items()}
        published = ch.query("SELECT DISTINCT model, provider FROM telemetry.model_stats_7d")
        stats = rolling_rows(buckets, as_of, keys=[(m, p) for m, p in published])
        write_stats(ch, stats)
        changed = {(k.model, k.hour) for k in touched}
        hourly = hourly_rows(buckets, as_of, hours=changed) if changed else []
        write_hourly(ch, hourly)
        return RefreshReport(as_of, new_rows, len(touched), len(stats), len(hourly))


def refresh(ch: ClickHouse, *, as_of: datetime | None = None) -> RefreshReport:
    """Fold rows ingested since the last refresh into their buckets and publish.

    Publishes one ``model_stats_7d`` row per (model, provider) and per model,
    and the ``model_stats_hourly`` rows of every hour that changed. Reads the
    window's buckets from the store first; a process that refreshes again
    and again keeps a ``Refresher`` instead.
    """
    return Refresher().refresh(ch, as_of=as_of)
