"""Rows as ``model_stats_7d`` gives them, for the pure export tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

AS_OF = datetime(2025, 5, 1, 12, 0, 30, 123000, tzinfo=UTC)
WINDOW_START = datetime(2025, 4, 24, 13, tzinfo=UTC)


def stats_row(model: str = "openai/gpt-4.1-mini", provider: str = "", **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "as_of": AS_OF.replace(tzinfo=None),  # as ClickHouse hands it back
        "window_start": WINDOW_START.replace(tzinfo=None),
        "requests": 3000,
        "input_tokens": 200_000,
        "output_tokens": 488_812,
        "traffic_tokens": 688_812,
        "errors": 87,
        "error_denominator": 3000,
        "error_rate": 0.029,
        "ttft_samples": 2900,
        "ttft_p50_ms": 2297.0,
        "ttft_p95_ms": 10900.0,
        "ttft_p99_ms": 15000.0,
        "output_tps_samples": 2800,
        "output_tps_p50": 175.2,
    }
    row.update(kw)
    return row


@pytest.fixture
def make_row() -> Any:
    return stats_row
