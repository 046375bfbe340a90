"""The published numbers: one row of ``model_stats_7d`` and of ``model_stats_hourly``.

Column names follow docs/definitions.md ("The numbers"), plus the sample
counts behind each rate and percentile so that readers (the exporter) can tell
a figure from a handful of requests from a real one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import orjson

__all__ = [
    "HOURLY_COLUMNS",
    "STATS_COLUMNS",
    "Figures",
    "HourlyRow",
    "StatsRow",
    "decode_row",
    "encode_row",
]


@dataclass(frozen=True, slots=True)
class Figures:
    requests: int
    input_tokens: int
    output_tokens: int
    traffic_tokens: int
    errors: int
    error_denominator: int
    error_rate: float | None
    ttft_samples: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    output_tps_samples: int
    output_tps_p50: float | None

    def values(self) -> tuple[Any, ...]:
        """The figures in column order (``dataclasses.astuple`` deep-copies each: slow)."""
        return (
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.traffic_tokens,
            self.errors,
            self.error_denominator,
            self.error_rate,
            self.ttft_samples,
            self.ttft_p50_ms,
            self.ttft_p95_ms,
            self.ttft_p99_ms,
            self.output_tps_samples,
            self.output_tps_p50,
        )


@dataclass(frozen=True, slots=True)
class StatsRow:
    """The rolling 7 days ending at ``as_of``; ``provider == ''`` means all providers."""

    model: str
    provider: str
    as_of: datetime
    window_start: datetime
    figures: Figures

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.model, self.provider, self.as_of, self.window_start, *self.figures.values())

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(STATS_COLUMNS, self.as_tuple(), strict=True))


@dataclass(frozen=True, slots=True)
class HourlyRow:
    """One hour of one (model, provider); ``provider == ''`` means all providers."""

    model: str
    provider: str
    hour: datetime
    as_of: datetime
    figures: Figures

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.model, self.provider, self.hour, self.as_of, *self.figures.values())

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(HOURLY_COLUMNS, self.as_tuple(), strict=True))


_FIGURE_COLUMNS = tuple(f.name for f in fields(Figures))
STATS_COLUMNS: tuple[str, ...] = ("model", "provider", "as_of", "window_start", *_FIGURE_COLUMNS)
HOURLY_COLUMNS: tuple[str, ...] = ("model", "provider", "hour", "as_of", *_FIGURE_COLUMNS)


def encode_row(row: StatsRow | HourlyRow) -> bytes:
    """A published row as JSON for the stats topics (times as RFC 3339 UTC).

    Copied to a right-sized ``bytes``: orjson (3.12+) leaves each result in
    a buffer of at least 4 KiB, and a publication queues thousands of rows
    for the producer (42 MB of 420-byte rows in bench/state_size.py).
    """
    return bytes(memoryview(orjson.dumps(row.as_dict(), option=orjson.OPT_UTC_Z)))


def decode_row(raw: bytes, columns: tuple[str, ...]) -> tuple[Any, ...]:
    """JSON from a stats topic back to a tuple in ``columns`` order, times parsed."""
    doc = orjson.loads(raw)
    out = []
    for name in columns:
        value = doc[name]
        if name in ("as_of", "window_start", "hour"):
            value = datetime.fromisoformat(value)
        out.append(value)
    return tuple(out)
