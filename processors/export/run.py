"""One export: read ``model_stats_7d`` and ``model_stats_hourly``, write the tree, push.

The tree under ``out``::

    index.json                          every model: headline figures, paths, sha256
    index.html                          the same as a page
    models/<vendor>/<model>.json        the model document (see document.py)
    models/<vendor>/<model>.html        the model page: performance block and charts
    badges/<vendor>/<model>.svg         the embeddable badge
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from processors.clickhouse import Reader
from processors.export import badge, charts, html
from processors.export.document import (
    DEFAULT_MAX_AGE,
    DEFAULT_MIN_SAMPLE,
    WINDOW,
    DocumentSet,
    Skipped,
    as_utc,
    build_documents,
    encode_json,
    iso,
)
from processors.export.push import PushPolicy, PushResult, push_documents, token_from_env
from processors.export.tree import TreeWriter
from schemas.stats import STATS_COLUMNS

__all__ = [
    "ExportOptions",
    "ExportReport",
    "export_once",
    "read_hourly",
    "read_stats",
    "write_tree",
]

_HOURLY_COLUMNS = (
    "model",
    "hour",
    "requests",
    "errors",
    "error_denominator",
    "error_rate",
    "ttft_samples",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "output_tps_samples",
    "output_tps_p50",
)


@dataclass(frozen=True, slots=True)
class ExportOptions:
    out: Path
    min_sample: int = DEFAULT_MIN_SAMPLE
    max_age: timedelta | None = DEFAULT_MAX_AGE
    skip_stale: bool = False
    chart_min_sample: int = charts.DEFAULT_CHART_MIN_SAMPLE
    badge_via: str = badge.DEFAULT_VIA
    push_url: str | None = None
    push_token: str | None = None
    push_policy: PushPolicy = field(default_factory=PushPolicy)
    fsync: bool = True


@dataclass(slots=True)
class ExportReport:
    out: Path
    as_of: datetime | None = None
    written: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    recovered: list[str] = field(default_factory=list)
    pushed: list[PushResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def push_failures(self) -> list[PushResult]:
        return [p for p in self.pushed if not p.ok]


def read_stats(ch: Reader) -> list[dict[str, Any]]:
    """Every row of ``telemetry.model_stats_7d``, columns as ``STATS_COLUMNS``."""
    cols = ", ".join(STATS_COLUMNS)
    return ch.query_dicts(f"SELECT {cols} FROM telemetry.model_stats_7d ORDER BY model, provider")


def read_hourly(ch: Reader, since: datetime) -> dict[str, list[dict[str, Any]]]:
    """All-providers hourly rows from ``since`` on, per model, in hour order."""
    cols = ", ".join(_HOURLY_COLUMNS)
    rows = ch.query(
        f"SELECT {cols} FROM telemetry.model_stats_hourly "
        "WHERE provider = '' AND hour >= {since:DateTime64(3, 'UTC')} ORDER BY model, hour",
        {"since": as_utc(since).replace(tzinfo=None)},
    )
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        d = dict(zip(_HOURLY_COLUMNS, row, strict=True))
        out[str(d["model"])].append(d)
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rel_root(slug: str) -> str:
    """From ``models/<slug>.html`` back to the top of the tree."""
    return "../" * (slug.count("/") + 1)


def write_tree(
    documents: DocumentSet,
    hourly: Mapping[str, Sequence[Mapping[str, Any]]],
    options: ExportOptions,
) -> ExportReport:
    """Render every file and publish the tree atomically (pure apart from the tree)."""
    report = ExportReport(out=options.out, as_of=documents.as_of, skipped=list(documents.skipped))
    entries: list[dict[str, Any]] = []
    with TreeWriter(options.out, fsync=options.fsync) as tree:
        report.recovered = tree.recovered
        for doc in documents.documents:
            slug = doc.model
            data = doc.encode()
            tree.write(f"models/{slug}.json", data)
            p50 = doc.figures["ttft_p50_ms"]
            svg = badge.badge_svg(slug, p50, via=options.badge_via)
            tree.write(f"badges/{slug}.svg", svg.encode())
            model_charts = charts.model_charts(
                hourly.get(slug, ()),
                window_start=as_utc(datetime.fromisoformat(doc.body["window_start"])),
                as_of=doc.as_of,
                min_sample=options.chart_min_sample,
            )
            root = _rel_root(slug)
            page = html.model_page(
                doc,
                model_charts,
                badge_svg=svg,
                root=root,
                badge_href=f"{root}badges/{slug}.svg",
            )
            tree.write(f"models/{slug}.html", page.encode())
            stats = doc.figures
            entries.append(
                {
                    "model": slug,
                    "as_of": doc.body["as_of"],
                    "path": f"models/{slug}.json",
                    "sha256": _sha256(data),
                    "page": f"models/{slug}.html",
                    "badge": f"badges/{slug}.svg",
                    "requests": stats["requests"],
                    "traffic_tokens": stats["traffic_tokens"],
                    "ttft_p50_ms": stats["ttft_p50_ms"],
                    "ttft_p95_ms": stats["ttft_p95_ms"],
                    "output_tps_p50": stats["output_tps_p50"],
                    "error_rate": stats["error_rate"],
                    "display": doc.body["display"],
                }
            )
            report.written.append(slug)
        as_of = iso(documents.as_of) if documents.as_of else None
        index = {
            "as_of": as_of,
            "window": WINDOW,
            "min_sample": options.min_sample,
            "models": entries,
            "skipped": [{"model": s.model, "reason": s.reason} for s in documents.skipped],
        }
        tree.write("index.json", encode_json(index))
        tree.write("index.html", html.index_page(entries, as_of=as_of).encode())
        tree.commit()
        report.files, report.bytes = tree.files, tree.bytes
    return report


def export_once(ch: Reader, options: ExportOptions, *, now: datetime | None = None) -> ExportReport:
    """Read the stats, check they are fresh, write the tree, push if asked.

    Raises ``StaleStatsError`` (nothing written) when stats are older than
    ``options.max_age``. Push failures do not raise: see ``report.pushed``.
    """
    t0 = time.perf_counter()
    rows = read_stats(ch)
    documents = build_documents(
        rows,
        min_sample=options.min_sample,
        now=now or datetime.now(UTC),
        max_age=options.max_age,
        skip_stale=options.skip_stale,
    )
    t1 = time.perf_counter()
    starts = [datetime.fromisoformat(d.body["window_start"]) for d in documents.documents]
    hourly = read_hourly(ch, min(starts)) if starts else {}
    t2 = time.perf_counter()
    report = write_tree(documents, hourly, options)
    t3 = time.perf_counter()
    if options.push_url and documents.documents:
        report.pushed = asyncio.run(
            push_documents(
                options.push_url,
                documents.documents,
                token=options.push_token or token_from_env(),
                policy=options.push_policy,
            )
        )
    t4 = time.perf_counter()
    report.timings = {
        "read_stats": t1 - t0,
        "read_hourly": t2 - t1,
        "write": t3 - t2,
        "push": t4 - t3,
        "total": t4 - t0,
    }
    return report
