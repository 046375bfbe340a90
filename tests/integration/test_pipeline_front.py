"""The embedded pipeline's contract on a real engine: ingest, backlog, refresh on read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.store import open_store
from schemas.settings import Settings
from telemetry.pipeline import open_pipeline
from telemetry.pipeline.embedded import EmbeddedPipeline

pytestmark = pytest.mark.integration


def test_embedded_ingest_stores_counts_and_reports(
    clickhouse: Any, clickhouse_dsn: str, tmp_path: Path, event_factory: Any
) -> None:
    pipeline = open_pipeline(Settings(clickhouse=clickhouse_dsn, data_dir=tmp_path))
    assert isinstance(pipeline, EmbeddedPipeline)
    events = [orjson.dumps(event_factory()) for _ in range(5)]
    lines = b"\n".join([*events, b'{"model": 1}', events[0]]) + b"\n"
    batches: list[int] = []

    done = pipeline.open_ingest()([lines], source="test", on_batch=lambda r: batches.append(1))
    assert (done.report.accepted, done.report.stored, done.report.rejected) == (6, 5, 1)
    assert done.detail == "5 new, 1 duplicates"
    assert done.after is not None and done.after.endswith("stats refreshed")
    assert batches  # progress was reported

    again = pipeline.open_ingest()([lines], source="test")
    assert (again.report.stored, again.detail) == (0, "0 new, 6 duplicates")

    ch = open_store(pipeline.settings)
    backlog = pipeline.store_backlog(ch)
    assert [(r.who, r.lag) for r in backlog.lag] == [("refresh", 0)]  # ingest refreshed
    assert backlog.dead_letters == 1  # the bad line: the rerun's same insert is deduplicated
    assert pipeline.refreshes(ch) == ch.is_embedded
    assert not open_pipeline(pipeline.settings.model_copy(update={"kafka": "b:1"})).refreshes(ch)
