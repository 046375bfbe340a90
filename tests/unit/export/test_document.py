"""Model documents: exact figures, the minimum-sample rule, staleness, safe slugs."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from processors.export.document import (
    FIGURES,
    build_documents,
    encode_json,
    iso,
    slug_problem,
)
from processors.export.errors import StaleStatsError

AS_OF_ISO = "2025-05-01T12:00:30.123Z"


def _now(make_row: Any, minutes: float) -> Any:
    from datetime import UTC

    return make_row()["as_of"].replace(tzinfo=UTC) + timedelta(minutes=minutes)


def test_document_shape_and_exact_values(make_row: Any) -> None:
    rows = [make_row(), make_row(provider="openai", requests=2000), make_row(provider="azure")]
    docs = build_documents(rows, now=_now(make_row, 1))
    assert [d.model for d in docs.documents] == ["openai/gpt-4.1-mini"]
    body = docs.documents[0].body
    assert body["model"] == "openai/gpt-4.1-mini"
    assert body["as_of"] == AS_OF_ISO
    assert body["window"] == "7d"
    assert body["stats"] == {k: rows[0][k] for k in FIGURES}
    assert body["display"] == {
        "ttft_p50": "2.30 s",
        "ttft_p95": "10.90 s",
        "output_speed": "175 tok/s",
        "error_rate": "2.9%",
        "traffic": "688.8K tokens / 7d",
        "badge_ttft_p50": "2297ms",
    }
    assert list(body["providers"]) == ["azure", "openai"]
    assert body["providers"]["openai"]["stats"]["requests"] == 2000
    assert body["withheld"] == []


def test_min_sample_withholds_each_figure_by_its_own_sample(make_row: Any) -> None:
    row = make_row(ttft_samples=99, error_denominator=100, output_tps_samples=0)
    body = build_documents([row], max_age=None).documents[0].body
    stats, shown = body["stats"], body["display"]
    assert stats["ttft_p50_ms"] is None and stats["ttft_p95_ms"] is None
    assert stats["ttft_p99_ms"] is None and stats["output_tps_p50"] is None
    assert stats["error_rate"] == 0.029  # 100 samples: exactly enough
    assert stats["requests"] == 3000 and stats["traffic_tokens"] == 688_812  # counts stay
    assert shown["ttft_p50"] == shown["ttft_p95"] == shown["output_speed"] == "—"
    assert shown["badge_ttft_p50"] == "—"
    assert shown["error_rate"] == "2.9%"
    assert body["withheld"] == ["ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "output_tps_p50"]


def test_min_sample_is_configurable(make_row: Any) -> None:
    row = make_row(requests=5, ttft_samples=5, error_denominator=5, output_tps_samples=5)
    assert build_documents([row], max_age=None).documents[0].figures["ttft_p50_ms"] is None
    low = build_documents([row], max_age=None, min_sample=5).documents[0]
    assert low.figures["ttft_p50_ms"] == 2297.0
    with pytest.raises(ValueError):
        build_documents([row], min_sample=-1)


def test_stale_stats_fail_loudly(make_row: Any) -> None:
    rows = [make_row(), make_row(model="x/y")]
    build_documents(rows, now=_now(make_row, 14), max_age=timedelta(minutes=15))
    with pytest.raises(StaleStatsError) as err:
        build_documents(rows, now=_now(make_row, 16), max_age=timedelta(minutes=15))
    assert "2 of 2 models" in str(err.value) and "x/y (16m old)" in str(err.value)
    assert [m for m, _ in err.value.stale] == ["openai/gpt-4.1-mini", "x/y"]
    # no max age: never stale
    build_documents(rows, now=_now(make_row, 10_000), max_age=None)


def test_skip_stale_skips_some_but_fails_when_all_are(make_row: Any) -> None:
    fresh_as_of = make_row()["as_of"] + timedelta(minutes=30)
    rows = [make_row(), make_row(model="x/y", as_of=fresh_as_of)]
    now = _now(make_row, 31)
    docs = build_documents(rows, now=now, max_age=timedelta(minutes=15), skip_stale=True)
    assert [d.model for d in docs.documents] == ["x/y"]
    assert docs.skipped[0].model == "openai/gpt-4.1-mini"
    assert docs.skipped[0].reason.startswith("stale")
    with pytest.raises(StaleStatsError):
        build_documents(rows[:1], now=now, max_age=timedelta(minutes=15), skip_stale=True)


@pytest.mark.parametrize(
    "model", ["../etc/passwd", "/abs", "a//b", "a/./b", ".hidden", "a/..", "", "x" * 201, "a b"]
)
def test_unsafe_slugs_are_skipped_with_a_reason(make_row: Any, model: str) -> None:
    assert slug_problem(model) is not None
    docs = build_documents([make_row(model=model)], max_age=None)
    assert docs.documents == [] and docs.skipped[0].model == model


@pytest.mark.parametrize(
    "model", ["openai/gpt-4.1-mini", "meta-llama/llama-3.1-8b-instruct:free", "a", "x/y/z"]
)
def test_safe_slugs(model: str) -> None:
    assert slug_problem(model) is None


def test_model_without_all_providers_row_is_skipped(make_row: Any) -> None:
    docs = build_documents([make_row(provider="openai")], max_age=None)
    assert docs.documents == []
    assert docs.skipped[0].reason == "no all-providers row (provider '')"


def test_encoding_is_byte_identical_and_exact(make_row: Any) -> None:
    row = make_row(ttft_p50_ms=2297.123456789012, error_rate=1 / 3)
    a = build_documents([row], max_age=None).documents[0].encode()
    b = build_documents([dict(row)], max_age=None).documents[0].encode()
    assert a == b
    back = json.loads(a)
    assert back["stats"]["ttft_p50_ms"] == 2297.123456789012
    assert back["stats"]["error_rate"] == 1 / 3
    assert encode_json({"b": 1, "a": 2}) == b'{\n  "a": 2,\n  "b": 1\n}\n'


def test_non_finite_figures_are_null(make_row: Any) -> None:
    doc = build_documents([make_row(ttft_p95_ms=float("nan"))], max_age=None).documents[0]
    assert doc.figures["ttft_p95_ms"] is None
    assert b"NaN" not in doc.encode()


def test_iso_is_utc_with_milliseconds(make_row: Any) -> None:
    assert iso(make_row()["as_of"]) == AS_OF_ISO
