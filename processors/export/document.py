"""``model_stats_7d`` rows → one catalog document per model. Pure: no I/O, no clock.

A document holds the numbers exactly as ClickHouse has them, except the
figures withheld by the minimum-sample rule: a rate or percentile computed
from fewer than ``min_sample`` samples is ``null`` (and its display ``—``),
and its name is listed in ``withheld``. Each figure is judged by its own
sample count (the columns beside it in ``model_stats_7d``):

==================================  ======================
figure                              sample count
==================================  ======================
``error_rate``                      ``error_denominator``
``ttft_p50_ms`` / ``p95`` / ``p99`` ``ttft_samples``
``output_tps_p50``                  ``output_tps_samples``
==================================  ======================

Counts (``requests``, tokens, ``errors``) are exact and always published.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.export import display
from processors.export.errors import StaleStatsError
from schemas.stats import STATS_COLUMNS

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MIN_SAMPLE",
    "FIGURES",
    "SAMPLE_OF",
    "WINDOW",
    "DocumentSet",
    "ModelDocument",
    "Skipped",
    "build_documents",
    "display_strings",
    "encode_json",
    "honest_figures",
    "iso",
    "slug_problem",
    "stale_models",
]

WINDOW = "7d"
DEFAULT_MIN_SAMPLE = 100
DEFAULT_MAX_AGE = timedelta(minutes=15)
ALL_PROVIDERS = ""

#: The figure columns of ``model_stats_7d``, in table order.
FIGURES: tuple[str, ...] = STATS_COLUMNS[4:]
#: Which sample count a rate or percentile needs to reach ``min_sample``.
SAMPLE_OF: dict[str, str] = {
    "error_rate": "error_denominator",
    "ttft_p50_ms": "ttft_samples",
    "ttft_p95_ms": "ttft_samples",
    "ttft_p99_ms": "ttft_samples",
    "output_tps_p50": "output_tps_samples",
}
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+~-]*$")
_MAX_SLUG = 200


def as_utc(ts: datetime) -> datetime:
    """ClickHouse hands back naive UTC datetimes; make them aware."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def iso(ts: datetime) -> str:
    """``2025-05-01T12:00:00.123Z``: UTC, milliseconds, as stored."""
    ts = as_utc(ts)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def honest_figures(row: Mapping[str, Any], min_sample: int) -> tuple[dict[str, Any], list[str]]:
    """The figures of one row, with those below ``min_sample`` set to None; and their names."""
    figures: dict[str, Any] = {}
    withheld: list[str] = []
    for name in FIGURES:
        value = row[name]
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        sample = SAMPLE_OF.get(name)
        if sample is not None and value is not None and int(row[sample]) < min_sample:
            value = None
            withheld.append(name)
        figures[name] = value
    return figures, withheld


def display_strings(figures: Mapping[str, Any]) -> dict[str, str]:
    """The strings the page shows for these figures (``—`` where a figure is null)."""
    return {
        "ttft_p50": display.ttft(figures["ttft_p50_ms"]),
        "ttft_p95": display.ttft(figures["ttft_p95_ms"]),
        "output_speed": display.output_speed(figures["output_tps_p50"]),
        "error_rate": display.error_rate(figures["error_rate"]),
        "traffic": display.traffic(figures["traffic_tokens"]),
        "badge_ttft_p50": display.badge_ttft(figures["ttft_p50_ms"]),
    }


def slug_problem(model: str) -> str | None:
    """Why ``model`` cannot name files under the tree (None when it can).

    A slug's ``/`` becomes a folder; every segment must be a plain name, so
    no slug escapes the tree (``..``, absolute paths, hidden files).
    """
    if not model or len(model) > _MAX_SLUG:
        return f"slug must be 1..{_MAX_SLUG} characters"
    for segment in model.split("/"):
        if not _SEGMENT.match(segment):
            return (
                f"slug segment {segment!r} is not a plain file name "
                "(letters, digits and . _ : @ + ~ -, not starting with a dot)"
            )
    return None


def encode_json(obj: Any) -> bytes:
    """The one JSON encoding of the tree: sorted keys, 2-space indent, UTF-8, newline."""
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


@dataclass(frozen=True, slots=True)
class Skipped:
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class ModelDocument:
    model: str
    as_of: datetime
    body: dict[str, Any]

    @property
    def figures(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.body["stats"]
        return stats

    def encode(self) -> bytes:
        return encode_json(self.body)


@dataclass(slots=True)
class DocumentSet:
    documents: list[ModelDocument] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def as_of(self) -> datetime | None:
        return max((d.as_of for d in self.documents), default=None)


def _part(row: Mapping[str, Any], min_sample: int) -> dict[str, Any]:
    figures, withheld = honest_figures(row, min_sample)
    return {
        "as_of": iso(row["as_of"]),
        "window_start": iso(row["window_start"]),
        "stats": figures,
        "display": display_strings(figures),
        "withheld": withheld,
    }


def stale_models(
    rows: Iterable[Mapping[str, Any]], *, now: datetime, max_age: timedelta
) -> list[tuple[str, float]]:
    """(model, age in seconds) of every model whose all-providers ``as_of`` is too old."""
    out = []
    for row in rows:
        if row["provider"] != ALL_PROVIDERS:
            continue
        age = (as_utc(now) - as_utc(row["as_of"])).total_seconds()
        if age > max_age.total_seconds():
            out.append((str(row["model"]), age))
    return sorted(out)


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def build_documents(
    rows: Iterable[Mapping[str, Any]],
    *,
    min_sample: int = DEFAULT_MIN_SAMPLE,
    now: datetime | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    skip_stale: bool = False,
) -> DocumentSet:
    """One document per model with an all-providers row, sorted by model.

    Staleness (``now`` and ``max_age`` both given): a model whose ``as_of`` is
    older than ``max_age`` raises :class:`StaleStatsError` naming every such
    model, so nothing stale is published; with ``skip_stale`` those models are
    skipped instead, unless every model is stale (then the pipeline has
    stopped, and the export fails all the same).
    """
    if min_sample < 0:
        raise ValueError("min_sample must be >= 0")
    rows = list(rows)
    result = DocumentSet()
    stale: dict[str, float] = {}
    if now is not None and max_age is not None:
        stale = dict(stale_models(rows, now=now, max_age=max_age))
        models = {str(r["model"]) for r in rows if r["provider"] == ALL_PROVIDERS}
        if stale and (not skip_stale or set(stale) >= models):
            listed = ", ".join(f"{m} ({_age(a)} old)" for m, a in list(stale.items())[:5])
            more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
            raise StaleStatsError(
                f"model_stats_7d is stale: {len(stale)} of {len(models)} models have an as_of "
                f"older than --max-age {_age(max_age.total_seconds())}: {listed}{more}; "
                "is the pipeline (telemetry run / worker) writing stats? "
                "Nothing was published",
                sorted(stale.items()),
            )

    by_model: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(str(row["model"]), {})[str(row["provider"])] = row
    for model in sorted(by_model):
        per_provider = by_model[model]
        problem = slug_problem(model)
        if problem is not None:
            result.skipped.append(Skipped(model, problem))
            continue
        if model in stale:
            result.skipped.append(
                Skipped(model, f"stale: as_of is {_age(stale[model])} old (--skip-stale)")
            )
            continue
        total = per_provider.get(ALL_PROVIDERS)
        if total is None:
            result.skipped.append(Skipped(model, "no all-providers row (provider '')"))
            continue
        body = {
            "model": model,
            "window": WINDOW,
            "min_sample": min_sample,
            **_part(total, min_sample),
            "providers": {
                p: _part(r, min_sample)
                for p, r in sorted(per_provider.items())
                if p != ALL_PROVIDERS
            },
        }
        result.documents.append(ModelDocument(model, as_utc(total["as_of"]), body))
    return result
