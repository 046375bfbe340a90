"""Server-side SVG charts: one slot per hour, gaps for missing or thin hours."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.export.charts import hour_slots, model_charts

SVG = "{http://www.w3.org/2000/svg}"
AS_OF = datetime(2025, 5, 1, 12, 0, 30, tzinfo=UTC)
START = datetime(2025, 4, 24, 13, tzinfo=UTC)


def _hour(i: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "hour": (START + timedelta(hours=i)).replace(tzinfo=None),
        "requests": 50,
        "errors": 1,
        "error_denominator": 50,
        "error_rate": 0.02,
        "ttft_samples": 50,
        "ttft_p50_ms": 2000.0 + i,
        "ttft_p95_ms": 9000.0 + i,
        "output_tps_samples": 50,
        "output_tps_p50": 170.0,
    }
    row.update(kw)
    return row


def test_hour_slots_cover_the_window() -> None:
    slots = hour_slots(START, AS_OF)
    assert len(slots) == 168 and slots[0] == START and slots[-1] == AS_OF.replace(second=0)


def test_charts_draw_every_hour_with_data() -> None:
    charts = model_charts([_hour(i) for i in range(168)], window_start=START, as_of=AS_OF)
    assert [c.key for c in charts] == ["ttft", "output_speed", "requests", "error_rate"]
    assert [c.points for c in charts] == [336, 168, 168, 168]
    for c in charts:
        root = ET.fromstring(c.svg)
        series = root.findall(f"{SVG}g[@class='series']")
        assert sum(int(g.get("data-points", "0")) for g in series) == c.points
    ttft = ET.fromstring(charts[0].svg)
    path = ttft.find(f"{SVG}g/{SVG}path")
    assert path is not None and path.get("d", "").count("L") == 167  # one unbroken line
    bars = ET.fromstring(charts[2].svg).findall(f"{SVG}g/{SVG}rect")
    assert len(bars) == 168


def test_gaps_for_missing_and_thin_hours() -> None:
    rows = [_hour(i) for i in range(168) if not 10 <= i < 20]
    rows[0] = _hour(0, ttft_samples=3)  # a percentile from 3 requests: not drawn
    charts = {c.key: c for c in model_charts(rows, window_start=START, as_of=AS_OF)}
    assert charts["ttft"].points == 2 * (168 - 10 - 1)
    assert charts["requests"].points == 168  # counts are exact: a quiet hour is a zero
    paths = ET.fromstring(charts["output_speed"].svg).findall(f"{SVG}g/{SVG}path")
    assert len(paths) == 2  # broken at the gap


def test_no_data_says_so() -> None:
    charts = model_charts([], window_start=START, as_of=AS_OF)
    assert charts[0].points == 0 and "no data in the last 7 days" in charts[0].svg
    assert model_charts([], window_start=START, as_of=AS_OF)[0].svg == charts[0].svg
