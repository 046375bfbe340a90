"""Export from a real ClickHouse: the published numbers are model_stats_7d's, exactly."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors.export.document import FIGURES, iso
from processors.export.errors import StaleStatsError
from processors.export.run import ExportOptions, export_once

pytestmark = pytest.mark.integration


def _snapshot(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_exported_values_equal_model_stats_7d(
    clickhouse: Any, tmp_path: Path, now: datetime, data: Any
) -> None:
    models = {
        "openai/gpt-4.1-mini": {"openai": 2000, "azure": 1000},
        "meta-llama/llama-3.1-8b-instruct:free": {"together": 150, "groq": 40},
        "tiny/model": {"p": 12},
    }
    data.insert(
        clickhouse, data.stats_rows(now, models), data.hourly_rows("openai/gpt-4.1-mini", now)
    )
    out = tmp_path / "export"
    report = export_once(clickhouse, ExportOptions(out=out, fsync=False), now=now)
    assert report.written == sorted(models) and report.skipped == []

    view = clickhouse.query_dicts("SELECT * FROM telemetry.model_stats_7d")
    assert len(view) == 3 + 5
    for row in view:
        doc = json.loads((out / "models" / f"{row['model']}.json").read_text())
        part = doc if row["provider"] == "" else doc["providers"][row["provider"]]
        assert part["as_of"] == iso(row["as_of"])
        assert part["window_start"] == iso(row["window_start"])
        for name in FIGURES:
            if name in part["withheld"]:
                assert part["stats"][name] is None
            else:
                assert part["stats"][name] == row[name], (row["model"], row["provider"], name)
                assert type(part["stats"][name]) is type(row[name]) or row[name] is None
        assert doc["window"] == "7d" and doc["model"] == row["model"]

    seed = json.loads((out / "models/openai/gpt-4.1-mini.json").read_text())
    assert seed["display"]["ttft_p50"] == "2.30 s"
    assert seed["display"]["traffic"] == "1.4M tokens / 7d"
    tiny = json.loads((out / "models/tiny/model.json").read_text())
    assert tiny["stats"]["ttft_p50_ms"] is None and tiny["display"]["ttft_p50"] == "—"
    assert tiny["stats"]["requests"] == 12
    groq = json.loads((out / "models/meta-llama/llama-3.1-8b-instruct:free.json").read_text())
    assert groq["providers"]["groq"]["stats"]["error_rate"] is None  # 40 < 100
    assert groq["providers"]["together"]["stats"]["error_rate"] is not None

    index = json.loads((out / "index.json").read_text())
    assert [e["model"] for e in index["models"]] == sorted(models)
    for e in index["models"]:
        assert e["sha256"] == hashlib.sha256((out / e["path"]).read_bytes()).hexdigest()
        assert (out / e["page"]).is_file() and (out / e["badge"]).is_file()
    page = (out / "models/openai/gpt-4.1-mini.html").read_text()
    assert 'data-points="336"' in page  # 168 hours of p50 and p95


def test_same_stats_give_byte_identical_trees(
    clickhouse: Any, tmp_path: Path, now: datetime, data: Any
) -> None:
    data.insert(clickhouse, data.stats_rows(now, {"a/b": {"x": 500}}), data.hourly_rows("a/b", now))
    first = export_once(clickhouse, ExportOptions(out=tmp_path / "one", fsync=False), now=now)
    export_once(clickhouse, ExportOptions(out=tmp_path / "two"), now=now + timedelta(minutes=1))
    assert first.files == 5
    assert _snapshot(tmp_path / "one") == _snapshot(tmp_path / "two")


def test_stale_stats_fail_and_keep_the_previous_export(
    clickhouse: Any, tmp_path: Path, now: datetime, data: Any
) -> None:
    out = tmp_path / "export"
    data.insert(clickhouse, data.stats_rows(now, {"a/b": {"x": 500}}))
    export_once(clickhouse, ExportOptions(out=out, fsync=False), now=now)
    before = _snapshot(out)
    later = now + timedelta(minutes=20)
    with pytest.raises(StaleStatsError, match="stale"):
        export_once(clickhouse, ExportOptions(out=out, max_age=timedelta(minutes=15)), now=later)
    assert _snapshot(out) == before


def test_min_sample_option(clickhouse: Any, tmp_path: Path, now: datetime, data: Any) -> None:
    data.insert(clickhouse, data.stats_rows(now, {"a/b": {"x": 50}}))
    out = tmp_path / "export"
    export_once(clickhouse, ExportOptions(out=out, fsync=False), now=now)
    assert json.loads((out / "models/a/b.json").read_text())["stats"]["ttft_p50_ms"] is None
    export_once(clickhouse, ExportOptions(out=out, min_sample=50, fsync=False), now=now)
    doc = json.loads((out / "models/a/b.json").read_text())
    assert doc["stats"]["ttft_p50_ms"] == 2297.0 and doc["min_sample"] == 50


def test_empty_stats_write_an_empty_index(clickhouse: Any, tmp_path: Path) -> None:
    report = export_once(clickhouse, ExportOptions(out=tmp_path / "e", fsync=False))
    assert report.written == [] and report.files == 2
    assert json.loads((tmp_path / "e/index.json").read_text())["models"] == []
