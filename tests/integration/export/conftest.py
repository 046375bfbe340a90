"""Shared pieces of the export integration tests: rows for ``model_stats_*_versions``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from processors.aggregate.window import window_start
from schemas.stats import HOURLY_COLUMNS, STATS_COLUMNS


def stats_rows(
    as_of: datetime, models: dict[str, dict[str, int]], *, seed: int = 0
) -> list[tuple[Any, ...]]:
    """Rows for ``model_stats_7d_versions``: per model, providers → requests; plus the '' row."""
    rows = []
    for m_i, (model, providers) in enumerate(sorted(models.items())):
        total = sum(providers.values())
        for p_i, (provider, requests) in enumerate([("", total), *sorted(providers.items())]):
            k = seed + m_i * 7 + p_i
            errors = requests * (k % 5) // 100
            rows.append(
                (
                    model,
                    provider,
                    as_of,
                    window_start(as_of),
                    requests,
                    requests * 120,
                    requests * 350 + k,
                    requests * 470 + k,
                    errors,
                    requests,
                    errors / requests if requests else None,
                    requests,
                    2297.0 + k * 1.123456789 if requests else None,
                    10900.0 + k * 3.3 if requests else None,
                    15000.25 + k if requests else None,
                    requests,
                    175.123456789 + k if requests else None,
                )
            )
    return rows


def hourly_rows(model: str, as_of: datetime, *, per_hour: int = 60) -> list[tuple[Any, ...]]:
    """168 hours of the all-providers series for ``model``, with a daily rhythm."""
    rows = []
    start = window_start(as_of)
    for h in range(168):
        hour = start + timedelta(hours=h)
        req = per_hour + int(per_hour / 2 * math.sin(h / 24 * 2 * math.pi))
        err = req // 40
        rows.append(
            (
                model,
                "",
                hour,
                as_of,
                req,
                req * 120,
                req * 350,
                req * 470,
                err,
                req,
                err / req,
                req,
                2000.0 + 300 * math.sin(h / 11),
                9000.0 + 1500 * math.sin(h / 13),
                14000.0,
                req,
                170.0 + 12 * math.cos(h / 9),
            )
        )
    return rows


def insert(
    ch: Any, stats: Sequence[tuple[Any, ...]], hourly: Sequence[tuple[Any, ...]] = ()
) -> None:
    ch.insert("telemetry.model_stats_7d_versions", stats, STATS_COLUMNS)
    if hourly:
        ch.insert("telemetry.model_stats_hourly_versions", hourly, HOURLY_COLUMNS)


@pytest.fixture
def now() -> datetime:
    """A fresh ``as_of`` with milliseconds, as the pipeline writes it."""
    t = datetime.now(UTC) - timedelta(seconds=30)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


@pytest.fixture
def data() -> SimpleNamespace:
    """``data.stats_rows``, ``data.hourly_rows``, ``data.insert`` (conftest is not importable)."""
    return SimpleNamespace(stats_rows=stats_rows, hourly_rows=hourly_rows, insert=insert)
