"""Display strings follow the seed page's formats, including rounding at the edges."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.export import display
from processors.export.display import STATS_TABLE_COLUMNS, stats_table_rows

M = display.MISSING


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (2297.0, "2.30 s"),  # the seed page: p50 TTFT 2.30 s, badge 2297ms
        (10900.0, "10.90 s"),  # the seed page: p95 TTFT 10.90 s
        (2295.0, "2.30 s"),  # half-up, not banker's
        (2294.999, "2.29 s"),
        (420.0, "0.42 s"),  # below 1 s: still seconds, as the page's column
        (5.0, "0.01 s"),
        (4.999, "<0.01 s"),
        (0.0, "0.00 s"),
        (59_994.999, "59.99 s"),
        (59_995.0, "1m 00s"),  # rounds to 60.00 s first, then switches unit
        (59_999.0, "1m 00s"),  # 59.999 s
        (65_400.0, "1m 05s"),
        (119_600.0, "2m 00s"),
        (3_599_499.0, "59m 59s"),
        (3_599_500.0, "1h 00m"),
        (3_723_000.0, "1h 02m"),
        (5_369_500.0, "1h 29m"),  # 89.49 min: no double rounding through whole seconds
        (2297, "2.30 s"),  # ints too
        (None, M),
        (math.nan, M),
        (math.inf, M),
        (-1.0, M),
    ],
)
def test_ttft(ms: float | None, expected: str) -> None:
    assert display.ttft(ms) == expected


@pytest.mark.parametrize(
    ("ms", "expected"),
    [(2297.0, "2297ms"), (2297.5, "2298ms"), (2297.49, "2297ms"), (0.4, "0ms"), (None, M)],
)
def test_badge_ttft(ms: float | None, expected: str) -> None:
    assert display.badge_ttft(ms) == expected


@pytest.mark.parametrize(
    ("tps", "expected"),
    [
        (175.0, "175 tok/s"),  # the seed page
        (175.4, "175 tok/s"),
        (175.5, "176 tok/s"),
        (1234.5, "1235 tok/s"),
        (10.0, "10 tok/s"),
        (9.95, "10 tok/s"),  # one decimal would be 10.0: whole tok/s
        (9.94, "9.9 tok/s"),
        (7.46, "7.5 tok/s"),
        (0.0, "0.0 tok/s"),
        (None, M),
        (math.nan, M),
    ],
)
def test_output_speed(tps: float | None, expected: str) -> None:
    assert display.output_speed(tps) == expected


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (0.029, "2.9%"),  # the seed page
        (0.0005, "0.1%"),  # 0.05 %: half-up on the decimal, not on the float
        (0.00049, "<0.1%"),  # never "0.0%" for a rate that is not zero
        (0.0, "0.0%"),
        (0.0295, "3.0%"),
        (0.02949, "2.9%"),
        (0.12345, "12.3%"),
        (0.9995, ">99.9%"),  # never "100.0%" while some requests succeed
        (0.9994, "99.9%"),
        (1.0, "100.0%"),
        (1 / 3, "33.3%"),
        (None, M),
    ],
)
def test_error_rate(rate: float | None, expected: str) -> None:
    assert display.error_rate(rate) == expected


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (688_812, "688.8K tokens / 7d"),  # the seed page
        (688_850, "688.9K tokens / 7d"),
        (999_949, "999.9K tokens / 7d"),
        (999_950, "1.0M tokens / 7d"),  # 999.95K rounds to 1000.0K: shown as 1.0M
        (1_050_000, "1.1M tokens / 7d"),
        (999_950_000, "1.0B tokens / 7d"),
        (1_234_567_890_123, "1.2T tokens / 7d"),
        (5_000_000_000_000_000, "5000.0T tokens / 7d"),
        (1000, "1.0K tokens / 7d"),
        (999, "999 tokens / 7d"),
        (1, "1 token / 7d"),
        (0, "0 tokens / 7d"),
        (None, M),
    ],
)
def test_traffic(tokens: int | None, expected: str) -> None:
    assert display.traffic(tokens) == expected


def test_stats_table_rows(make_row: Any) -> None:
    as_of = datetime(2025, 5, 1, 12, tzinfo=UTC)
    rows = [
        make_row(provider="openai", as_of=as_of),
        make_row(as_of=as_of),
        make_row(
            model="a/b",
            as_of=as_of,
            requests=5,
            ttft_samples=5,
            error_denominator=5,
            output_tps_samples=5,
        ),
    ]
    table = stats_table_rows(rows)
    assert [len(r) for r in table] == [len(STATS_TABLE_COLUMNS)] * 3
    assert table[0][:3] == ["a/b", "all", "5"]
    assert table[0][3:7] == [M, M, M, M]  # too few samples: withheld
    assert table[1] == [
        "openai/gpt-4.1-mini",
        "all",
        "3,000",
        "2.30 s",
        "10.90 s",
        "175 tok/s",
        "2.9%",
        "688.8K tokens / 7d",
        "2025-05-01T12:00:00.000Z",
    ]
    assert table[2][1] == "openai"
    assert stats_table_rows(rows, min_sample=1)[0][3] == "2.30 s"
