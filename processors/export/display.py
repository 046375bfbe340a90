"""The strings a model page shows, formatted exactly as the seed page does. Pure.

The display rules of docs/exports.md, taken from a real model page, are the spec:

============================  ==========================  ===========================
figure                        seed page                   rule
============================  ==========================  ===========================
TTFT p50 / p95                ``2.30 s``, ``10.90 s``     seconds, 2 decimals, below 1 s
                                                          too (``0.42 s``, under 5 ms
                                                          ``<0.01 s``); from 60 s on
                                                          ``1m 05s``, from 1 h ``1h 02m``
Output speed                  ``175 tok/s``               whole tok/s; below 10 tok/s one
                                                          decimal (``7.5 tok/s``)
Error rate                    ``2.9%``                    percent, 1 decimal; a non-zero
                                                          rate below 0.05 % is ``<0.1%``,
                                                          one short of 100 % is ``>99.9%``
Traffic                       ``688.8K tokens / 7d``      below 1,000 the exact count;
                                                          else 1 decimal with K, M, B, T
Badge TTFT                    ``2297ms``                  whole milliseconds, no space
missing / withheld figure     --                          ``—`` (an em dash)
============================  ==========================  ===========================

Rounding is half-up on the decimal value a person reads (``0.05 %`` shows as
``0.1%``, ``2.295 s`` as ``2.30 s``), never banker's rounding and never the
binary float's accident: values go through their shortest ``repr`` into
``Decimal``. Rounding is applied before a unit is chosen, so ``59.999 s`` is
``1m 00s`` and ``999,950`` tokens is ``1.0M``, never ``60.00 s`` or ``1000.0K``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = [
    "MISSING",
    "STATS_TABLE_COLUMNS",
    "badge_ttft",
    "error_rate",
    "output_speed",
    "stats_table_rows",
    "token_count",
    "traffic",
    "ttft",
]

#: What the page shows for a figure that is absent or withheld (too few samples).
MISSING = "—"
_SUFFIXES = ("", "K", "M", "B", "T")


def _decimal(value: float | int | None) -> Decimal | None:
    """The decimal a person reads (the float's shortest ``repr``); None if not a figure."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return None
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(int(value))


def _round(value: Decimal, places: int) -> Decimal:
    """Half-up rounding to ``places`` decimals."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def ttft(ms: float | int | None) -> str:
    """``2297.0`` → ``"2.30 s"``; ``65_400`` → ``"1m 05s"``; ``None`` → ``"—"``."""
    value = _decimal(ms)
    if value is None:
        return MISSING
    seconds = _round(value / 1000, 2)
    if seconds == 0 and value > 0:
        return "<0.01 s"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(_round(value / 1000, 0))
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    minutes = int(_round(value / 60_000, 0))
    return f"{minutes // 60}h {minutes % 60:02d}m"


def badge_ttft(ms: float | int | None) -> str:
    """The badge's form: ``2297.0`` → ``"2297ms"``."""
    value = _decimal(ms)
    if value is None:
        return MISSING
    return f"{_round(value, 0):.0f}ms"


def output_speed(tps: float | int | None) -> str:
    """``175.4`` → ``"175 tok/s"``; ``7.46`` → ``"7.5 tok/s"``."""
    value = _decimal(tps)
    if value is None:
        return MISSING
    one = _round(value, 1)
    if one < 10:
        return f"{one:.1f} tok/s"
    return f"{_round(value, 0):.0f} tok/s"


def error_rate(rate: float | None) -> str:
    """A fraction: ``0.029`` → ``"2.9%"``; ``0.0005`` → ``"0.1%"``; ``0.0004`` → ``"<0.1%"``."""
    value = _decimal(rate)
    if value is None:
        return MISSING
    pct = _round(value * 100, 1)
    if pct == 0 and value > 0:
        return "<0.1%"
    if pct >= 100 and value < 1:
        return ">99.9%"
    return f"{pct:.1f}%"


def token_count(tokens: int | None) -> str:
    """``688_812`` → ``"688.8K"``; ``999_950`` → ``"1.0M"``; ``950`` → ``"950"``."""
    value = _decimal(tokens)
    if value is None:
        return MISSING
    value = _round(value, 0)
    if value < 1000:
        return f"{value:.0f}"
    for i, suffix in enumerate(_SUFFIXES[1:], start=1):
        scaled = _round(value.scaleb(-3 * i), 1)
        if scaled < 1000 or suffix == _SUFFIXES[-1]:
            return f"{scaled:.1f}{suffix}"
    raise AssertionError("unreachable")


def traffic(tokens: int | None) -> str:
    """``688_812`` → ``"688.8K tokens / 7d"`` (``"1 token / 7d"`` for one)."""
    if _decimal(tokens) is None:
        return MISSING
    unit = "token" if tokens == 1 else "tokens"
    return f"{token_count(tokens)} {unit} / 7d"


#: Header of :func:`stats_table_rows`, one entry per column.
STATS_TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "provider",
    "requests",
    "TTFT p50",
    "TTFT p95",
    "output speed",
    "error rate",
    "traffic",
    "as of",
)


def stats_table_rows(rows: Iterable[Any], *, min_sample: int | None = None) -> list[list[str]]:
    """``model_stats_7d`` rows → the cells a person reads in ``telemetry stats``.

    ``rows`` are ``StatsRow`` objects or mappings with the ``STATS_COLUMNS``
    keys (``ClickHouse.query_dicts`` or ``telemetry stats --json`` output).
    The same honest-number rule as the export applies: a rate or percentile
    from fewer than ``min_sample`` samples shows ``—`` (default: the export's
    100). Sorted by model, the all-providers row first (provider ``all``).
    Columns: :data:`STATS_TABLE_COLUMNS`.
    """
    from processors.export.document import DEFAULT_MIN_SAMPLE, honest_figures, iso

    threshold = DEFAULT_MIN_SAMPLE if min_sample is None else min_sample
    dicts = [r if isinstance(r, Mapping) else r.as_dict() for r in rows]
    dicts.sort(key=lambda r: (str(r["model"]), str(r["provider"])))
    out: list[list[str]] = []
    for r in dicts:
        figures, _ = honest_figures(r, threshold)
        out.append(
            [
                str(r["model"]),
                str(r["provider"]) or "all",
                f"{int(r['requests']):,}",
                ttft(figures["ttft_p50_ms"]),
                ttft(figures["ttft_p95_ms"]),
                output_speed(figures["output_tps_p50"]),
                error_rate(figures["error_rate"]),
                traffic(figures["traffic_tokens"]),
                iso(r["as_of"]),
            ]
        )
    return out
