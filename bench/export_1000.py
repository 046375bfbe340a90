"""How long does a catalog export of 1,000 models take?

Puts synthetic stats for 1,000 models x 3 providers (plus the all-providers
rows) and their full 7-day hourly series (every provider and all-providers:
672,000 hourly rows) into a chDB ClickHouse under a temporary directory, then
times ``export_once`` end to end: read ``model_stats_7d``, read the hourly
series, render 1,000 JSON documents, pages with charts and badges, and swap
the tree in. Runs each variant a few times and prints the figures last.

    python bench/export_1000.py [--models 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.aggregate.window import window_start
from processors.clickhouse import connect
from processors.export.run import ExportOptions, export_once
from processors.migrate import migrate
from schemas.stats import HOURLY_COLUMNS, STATS_COLUMNS

PROVIDERS = ("", "p-alpha", "p-beta", "p-gamma")


def _figures(rnd: random.Random, requests: int) -> tuple[object, ...]:
    errors = int(requests * rnd.uniform(0, 0.06))
    tin, tout = requests * rnd.randint(50, 400), requests * rnd.randint(100, 800)
    p50 = rnd.uniform(200, 4000)
    return (
        requests,
        tin,
        tout,
        tin + tout,
        errors,
        requests,
        errors / requests if requests else None,
        requests,
        p50 if requests else None,
        p50 * rnd.uniform(2, 5) if requests else None,
        p50 * rnd.uniform(5, 8) if requests else None,
        requests,
        rnd.uniform(20, 300) if requests else None,
    )


def populate(ch: object, models: int, as_of: datetime) -> tuple[int, int]:
    rnd = random.Random(42)
    start = window_start(as_of)
    stats, hourly = [], []
    for m in range(models):
        model = f"vendor{m % 40:02d}/model-{m:04d}"
        base = rnd.choice((20, 80, 400, 3000, 20000))
        for provider in PROVIDERS:
            share = 1.0 if provider == "" else rnd.uniform(0.2, 0.5)
            req = max(int(base * share), 1)
            stats.append((model, provider, as_of, start, *_figures(rnd, req)))
            for h in range(168):
                hr = max(int(req / 168 * (1 + 0.5 * math.sin(h / 24 * 2 * math.pi))), 0)
                hourly.append(
                    (model, provider, start + timedelta(hours=h), as_of, *_figures(rnd, hr))
                )
    ch.insert("telemetry.model_stats_7d_versions", stats, STATS_COLUMNS)  # type: ignore[attr-defined]
    for i in range(0, len(hourly), 100_000):
        ch.insert(  # type: ignore[attr-defined]
            "telemetry.model_stats_hourly_versions", hourly[i : i + 100_000], HOURLY_COLUMNS
        )
    return len(stats), len(hourly)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        root = Path(tmp)
        ch = connect(f"chdb://{root / 'clickhouse'}")
        migrate(ch, requests_ttl_days=30)
        as_of = datetime.now(UTC).replace(microsecond=0)
        t = time.perf_counter()
        n_stats, n_hourly = populate(ch, args.models, as_of)
        print(
            f"inserted {n_stats} stats rows and {n_hourly} hourly rows "
            f"in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        results: dict[str, list[dict[str, float]]] = {}
        last = None
        for fsync in (True, False):
            label = "fsync" if fsync else "no-fsync"
            for _ in range(args.runs):
                options = ExportOptions(out=root / "export", fsync=fsync)
                last = export_once(ch, options, now=as_of + timedelta(seconds=5))
                results.setdefault(label, []).append(last.timings)
        assert last is not None
        print(
            f"tree: {last.files} files, {last.bytes / 1e6:.1f} MB, "
            f"{len(last.written)} models written, {len(last.skipped)} skipped"
        )
        for label, runs in results.items():
            parts = {
                k: statistics.median(r[k] for r in runs)
                for k in ("read_stats", "read_hourly", "write", "total")
            }
            print(
                f"export {args.models} models ({label}, median of {len(runs)}): "
                f"total {parts['total']:.2f} s = read stats {parts['read_stats']:.2f} s + "
                f"read hourly {parts['read_hourly']:.2f} s + render & write {parts['write']:.2f} s"
            )


if __name__ == "__main__":
    main()
