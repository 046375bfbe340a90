"""Embedded mode: bring hour buckets up to date from raw rows, then publish the stats.

Raw events in ``telemetry.requests`` are the durable log; the hour buckets in
``telemetry.stat_buckets`` are derived from them by the same aggregation core
the Faust workers use. Each bucket row records ``through``, the newest
``ingested_at`` it includes, and a refresh adds only newer rows of its key, so
a refresh interrupted at any point is simply run again: nothing is lost and
nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

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
from processors.clickhouse import ClickHouse
from processors.sinks.stats import write_hourly, write_stats

__all__ = ["RefreshReport", "refresh", "unfolded_rows"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WATERMARK = "buckets_watermark"


@dataclass(frozen=True, slots=True)
class RefreshReport:
    as_of: datetime
    new_rows: int
    buckets_updated: int
    stats_rows: int
    hourly_rows: int


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


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
        {"n": _WATERMARK},
    )
    return datetime.fromisoformat(rows[0][0]) if rows else _EPOCH


def _set_watermark(ch: ClickHouse, value: datetime) -> None:
    ch.insert("telemetry.pipeline_state", [(_WATERMARK, value.isoformat())], ("name", "value"))


def _load_buckets(
    ch: ClickHouse, since_hour: datetime
) -> dict[BucketKey, tuple[HourBucket, datetime]]:
    rows = ch.query(
        "SELECT model, provider, hour, through, hex(state) FROM telemetry.stat_buckets FINAL "
        "WHERE hour >= {since:DateTime64(3, 'UTC')}",
        {"since": since_hour},
    )
    out = {}
    for model, provider, hour, through, state in rows:
        hour = _utc(hour)
        bucket = HourBucket.from_bytes(bytes.fromhex(state))
        out[BucketKey(model, provider, hour_of(hour))] = (bucket, _utc(through))
    return out


def refresh(ch: ClickHouse, *, as_of: datetime | None = None) -> RefreshReport:
    """Fold rows ingested since the last refresh into their buckets and publish.

    Publishes one ``model_stats_7d`` row per (model, provider) and per model,
    and the ``model_stats_hourly`` rows of every hour that changed.
    """
    as_of = as_of or datetime.now(UTC)
    start = window_start(as_of)
    low = _watermark(ch)
    high_rows = ch.query("SELECT max(ingested_at) FROM telemetry.requests")
    high = _utc(high_rows[0][0]) if high_rows and high_rows[0][0] else low
    new_rows = 0
    touched: dict[BucketKey, HourBucket] = {}
    cutoffs: list[datetime] = []
    stored = _load_buckets(ch, start)
    if high > low:
        rows = ch.query(
            "SELECT model, provider, toStartOfHour(ts) AS h, ingested_at, toString(status), "
            "toString(error_type), ttft_ms, latency_ms, input_tokens, output_tokens "
            "FROM telemetry.requests "
            "WHERE ingested_at > {low:DateTime64(3, 'UTC')} "
            "AND ingested_at <= {high:DateTime64(3, 'UTC')} "
            "AND ts >= {start:DateTime64(3, 'UTC')}",
            {"low": low, "high": high, "start": start},
        )
        new_rows = len(rows)
        # One columnar add for every row newer than its bucket's ``through``.
        keys: dict[tuple[str, str, datetime], int] = {}
        group: list[int] = []
        kept = []
        targets: list[HourBucket] = []
        for r in rows:
            k = (r[0], r[1], _utc(r[2]))
            j = keys.get(k)
            if j is None:
                key = BucketKey(k[0], k[1], hour_of(k[2]))
                bucket, through = stored.get(key, (HourBucket(), _EPOCH))
                j = keys[k] = len(targets)
                targets.append(bucket)
                touched[key] = bucket
                cutoffs.append(through)
            if _utc(r[3]) > cutoffs[j]:
                group.append(j)
                kept.append(r)
        if kept:
            cols = BucketInputs.from_values(
                [r[4] for r in kept],  # status
                [r[5] for r in kept],  # error_type
                [r[6] for r in kept],  # ttft_ms
                [r[7] for r in kept],  # latency_ms
                [r[8] for r in kept],  # input_tokens
                [r[9] for r in kept],  # output_tokens
            )
            HourBucket.add_groups(targets, np.asarray(group, dtype=np.intp), cols)
        if touched:
            ch.insert(
                "telemetry.stat_buckets",
                [
                    (k.model, k.provider, hour_start(k.hour), high, b.to_bytes())
                    for k, b in touched.items()
                ],
                ("model", "provider", "hour", "through", "state"),
            )
        _set_watermark(ch, high)

    buckets = {k: b for k, (b, _) in stored.items()}
    buckets.update(touched)
    published = ch.query("SELECT DISTINCT model, provider FROM telemetry.model_stats_7d")
    stats = rolling_rows(buckets, as_of, keys=[(m, p) for m, p in published])
    write_stats(ch, stats)
    changed = {(k.model, k.hour) for k in touched}
    hourly = hourly_rows(buckets, as_of, hours=changed) if changed else []
    write_hourly(ch, hourly)
    return RefreshReport(as_of, new_rows, len(touched), len(stats), len(hourly))
