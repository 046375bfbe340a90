"""Folding in memory during an ingest, publishing once, and `stats` reading without refreshing.

An ingest folds stored rows into the buckets it holds every so often and
stores and publishes them once, at the end; `telemetry stats` refreshes only
when the last publication is not current. Each shortcut must give the very
figures the plain way gives: one refresh from the stored rows.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pipeline_util import expected_counts, synthetic_events

from processors.embedded import Refresher, ingest_lines, refresh
from processors.embedded import ingest as ingest_module
from processors.publication import published_is_current

pytestmark = pytest.mark.integration


def _published(ch: Any) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Every figure of the published rows but ``as_of``, per (model, provider)."""
    rows = ch.query_dicts("SELECT * FROM telemetry.model_stats_7d")
    return {
        (r["model"], r["provider"]): tuple(v for k, v in sorted(r.items()) if k != "as_of")
        for r in rows
    }


def _hourly(ch: Any) -> set[tuple[Any, ...]]:
    rows = ch.query_dicts("SELECT * FROM telemetry.model_stats_hourly")
    return {tuple(v for k, v in sorted(r.items()) if k != "as_of") for r in rows}


def _lines(docs: list[dict[str, Any]]) -> list[bytes]:
    return [b"\n".join(orjson.dumps(d) for d in docs) + b"\n"]


def test_folds_during_an_ingest_give_the_figures_of_one_refresh(
    clickhouse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = synthetic_events(3_000, seed=31)
    monkeypatch.setattr(ingest_module, "REFRESH_EVERY", 250)  # a fold every block or so
    report = ingest_lines(clickhouse, _lines(docs), source="t", batch_size=200)
    assert report.refresh is not None
    folded, folded_hourly = _published(clickhouse), _hourly(clickhouse)

    # The plain way: the buckets and publications dropped, one refresh from the rows.
    for table in ("stat_buckets", "pipeline_state", "model_stats_7d_versions"):
        clickhouse.command(f"TRUNCATE TABLE telemetry.{table}")
    clickhouse.command("TRUNCATE TABLE telemetry.model_stats_hourly_versions")
    refresh(clickhouse)

    assert _published(clickhouse) == folded
    assert _hourly(clickhouse) == folded_hourly
    unique = {d["event_id"]: d for d in reversed(docs)}
    want = expected_counts(list(unique.values())).requests
    got = {
        (r["model"], r["provider"]): r["requests"]
        for r in clickhouse.query_dicts("SELECT * FROM telemetry.model_stats_7d")
    }
    assert got == want


def test_rows_folded_but_not_stored_are_counted_once_after_a_failure(clickhouse: Any) -> None:
    docs = synthetic_events(600, seed=32)
    ingest_lines(clickhouse, _lines(docs[:300]), source="t", do_refresh=False)
    refresher = Refresher()
    assert refresher.fold(clickhouse) > 0  # counted in memory only
    stored = clickhouse.query("SELECT count() FROM telemetry.stat_buckets")[0][0]
    assert stored == 0
    # A process that stops here loses the fold; the rows are read again from the store.
    ingest_lines(clickhouse, _lines(docs[300:]), source="t", do_refresh=False)
    refresh(clickhouse)
    unique = {d["event_id"]: d for d in reversed(docs)}
    got = {
        (r["model"], r["provider"]): r["requests"]
        for r in clickhouse.query_dicts("SELECT * FROM telemetry.model_stats_7d")
    }
    assert got == expected_counts(list(unique.values())).requests


def test_a_publication_is_current_only_while_nothing_is_left_to_fold(clickhouse: Any) -> None:
    docs = synthetic_events(400, seed=33)
    assert not published_is_current(clickhouse)  # nothing published yet
    ingest_lines(clickhouse, _lines(docs[:200]), source="t")
    assert published_is_current(clickhouse)
    ingest_lines(clickhouse, _lines(docs[200:]), source="t", do_refresh=False)
    assert not published_is_current(clickhouse)  # rows stored since
    refresh(clickhouse)
    assert published_is_current(clickhouse)
    # The watermark moved after the last publication (a refresh stopped between the two).
    clickhouse.command(
        "INSERT INTO telemetry.pipeline_state (name, value) VALUES "
        "('buckets_watermark', toString(now64(3, 'UTC') + INTERVAL 1 SECOND))"
    )
    assert not published_is_current(clickhouse)
