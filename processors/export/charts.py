"""Server-side SVG charts of the last 7 days from ``model_stats_hourly``. Pure.

No charting library and no JavaScript: each chart is an inline ``<svg>`` the
exporter writes into the page, so the page draws with nothing fetched and the
same series always give the same bytes. One slot per hour of the window
(168); an hour without data, or whose percentile or rate rests on fewer than
``min_sample`` samples, is a gap in the line rather than an invented point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from processors.export import display
from processors.export.document import SAMPLE_OF, as_utc

__all__ = [
    "DEFAULT_CHART_MIN_SAMPLE",
    "Chart",
    "Series",
    "hour_slots",
    "model_charts",
    "render_chart",
]

#: Hourly points resting on fewer samples than this are gaps (hours are small).
DEFAULT_CHART_MIN_SAMPLE = 10
_W, _H = 720, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 14, 12, 26
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    color: str
    values: Sequence[float | None]


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    svg: str
    points: int


def hour_slots(window_start: datetime, as_of: datetime) -> list[datetime]:
    """The hour starts from ``window_start`` to the hour of ``as_of``, inclusive."""
    start = as_utc(window_start).replace(minute=0, second=0, microsecond=0)
    end = as_utc(as_of).replace(minute=0, second=0, microsecond=0)
    slots = []
    t = start
    while t <= end:
        slots.append(t)
        t += timedelta(hours=1)
    return slots


def _nice_step(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= ``value``."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1.0, 2.0, 5.0, 10.0):
        step = m * 10.0**exp
        if step >= value * (1 - 1e-12):
            return step
    return 10.0 ** (exp + 1)


def _axis(peak: float) -> tuple[float, int]:
    """(top of the y axis, number of grid steps) for data peaking at ``peak``."""
    if peak <= 0:
        return 1.0, 4
    step = _nice_step(peak / 4)
    steps = max(1, math.ceil(peak / step - 1e-9))
    return step * steps, steps


def _num(v: float) -> str:
    """Coordinates with one decimal, no trailing zeros: short, stable SVG."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def render_chart(
    slots: Sequence[datetime],
    series: Sequence[Series],
    *,
    y_label: Callable[[float], str],
    bars: bool = False,
    title: str = "",
) -> tuple[str, int]:
    """One chart as an SVG string, and the number of data points it drew."""
    n = max(len(slots), 1)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    finite = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    top, steps = _axis(max(finite, default=0.0))
    step = plot_w / n

    def x_of(i: int) -> float:
        return _LEFT + step * (i + 0.5)

    def y_of(v: float) -> float:
        return _TOP + plot_h * (1 - min(v, top) / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_W} {_H}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for k in range(steps + 1):
        value = top * k / steps
        gy = _num(y_of(value))
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{gy}" y2="{gy}"/>')
        out.append(
            f'<text class="ylabel" x="{_LEFT - 6}" y="{gy}" dy="3.5" '
            f'text-anchor="end">{escape(y_label(value))}</text>'
        )
    for i, t in enumerate(slots):
        if t.hour == 0:
            tx = _num(_LEFT + step * i)
            out.append(f'<line class="tick" x1="{tx}" x2="{tx}" y1="{_TOP}" y2="{_H - _BOTTOM}"/>')
            out.append(
                f'<text class="xlabel" x="{tx}" y="{_H - 8}" text-anchor="middle">'
                f"{_MONTHS[t.month - 1]} {t.day}</text>"
            )
    points = 0
    for s in series:
        valid = [(i, v) for i, v in enumerate(s.values) if v is not None and math.isfinite(v)]
        points += len(valid)
        out.append(
            f'<g class="series" data-label="{escape(s.label)}" data-points="{len(valid)}" '
            f'fill="{s.color}" stroke="{s.color}">'
        )
        if bars:
            width = _num(max(step - 1, 1))
            base = _TOP + plot_h
            for i, v in valid:
                if v <= 0:
                    continue
                y = y_of(v)
                out.append(
                    f'<rect x="{_num(_LEFT + step * i + 0.5)}" y="{_num(y)}" '
                    f'width="{width}" height="{_num(base - y)}"/>'
                )
        else:
            runs: list[list[tuple[int, float]]] = []
            for i, v in valid:
                if runs and runs[-1][-1][0] == i - 1:
                    runs[-1].append((i, v))
                else:
                    runs.append([(i, v)])
            for run in runs:
                if len(run) == 1:
                    i, v = run[0]
                    out.append(f'<circle cx="{_num(x_of(i))}" cy="{_num(y_of(v))}" r="2"/>')
                    continue
                d = " ".join(
                    f"{'M' if j == 0 else 'L'}{_num(x_of(i))},{_num(y_of(v))}"
                    for j, (i, v) in enumerate(run)
                )
                out.append(f'<path d="{d}" fill="none" stroke-width="1.6"/>')
        out.append("</g>")
    if not finite:
        out.append(
            f'<text class="empty" x="{_LEFT + plot_w / 2:.0f}" y="{_TOP + plot_h / 2:.0f}" '
            'text-anchor="middle">no data in the last 7 days</text>'
        )
    if len(series) > 1:
        lx = _LEFT + 8
        for s in series:
            out.append(
                f'<rect x="{lx}" y="{_TOP + 6}" width="10" height="3" fill="{s.color}"/>'
                f'<text class="legend" x="{lx + 14}" y="{_TOP + 11}">{escape(s.label)}</text>'
            )
            lx += 24 + 7 * len(s.label)
    out.append("</svg>")
    return "\n".join(out), points


def _seconds_label(ms: float) -> str:
    return f"{Decimal(repr(ms / 1000)).normalize():f} s" if ms else "0"


def _count_label(v: float) -> str:
    return display.token_count(round(v)) if v else "0"


def _pct_label(v: float) -> str:
    return f"{Decimal(repr(round(v * 100, 4))).normalize():f}%" if v else "0"


def _tps_label(v: float) -> str:
    return f"{Decimal(repr(round(v, 4))).normalize():f}" if v else "0"


def model_charts(
    hourly: Iterable[Mapping[str, Any]],
    *,
    window_start: datetime,
    as_of: datetime,
    min_sample: int = DEFAULT_CHART_MIN_SAMPLE,
) -> list[Chart]:
    """The four charts of a model page from its all-providers hourly rows."""
    slots = hour_slots(window_start, as_of)
    index = {t: i for i, t in enumerate(slots)}
    cols: dict[str, list[float | None]] = {
        c: [None] * len(slots)
        for c in ("ttft_p50_ms", "ttft_p95_ms", "output_tps_p50", "requests", "error_rate")
    }
    for row in hourly:
        i = index.get(as_utc(row["hour"]))
        if i is None:
            continue
        for col, values in cols.items():
            value = row[col]
            sample = SAMPLE_OF.get(col)
            if value is None or (sample is not None and int(row[sample]) < min_sample):
                continue
            values[i] = float(value)
    cols["requests"] = [v or 0.0 for v in cols["requests"]]
    specs: list[tuple[str, str, list[Series], Callable[[float], str], bool]] = [
        (
            "ttft",
            "Time to first token (p50, p95)",
            [
                Series("p50", "#2563eb", cols["ttft_p50_ms"]),
                Series("p95", "#f59e0b", cols["ttft_p95_ms"]),
            ],
            _seconds_label,
            False,
        ),
        (
            "output_speed",
            "Output speed (tok/s, p50)",
            [Series("tok/s", "#059669", cols["output_tps_p50"])],
            _tps_label,
            False,
        ),
        (
            "requests",
            "Requests per hour",
            [Series("requests", "#6366f1", cols["requests"])],
            _count_label,
            True,
        ),
        (
            "error_rate",
            "Error rate per hour",
            [Series("error rate", "#dc2626", cols["error_rate"])],
            _pct_label,
            False,
        ),
    ]
    charts = []
    for key, title, series, label, bars in specs:
        svg, points = render_chart(slots, series, y_label=label, bars=bars, title=title)
        charts.append(Chart(key, title, svg, points))
    return charts
