"""Pages are self-contained: the performance block, inline charts, nothing to fetch."""

from __future__ import annotations

import re
from typing import Any

from processors.export.badge import badge_svg
from processors.export.charts import model_charts
from processors.export.document import as_utc, build_documents
from processors.export.html import index_page, model_page


def test_model_page(make_row: Any) -> None:
    rows = [make_row(), make_row(provider="openai")]
    doc = build_documents(rows, max_age=None).documents[0]
    charts = model_charts(
        [], window_start=as_utc(rows[0]["window_start"]), as_of=as_utc(rows[0]["as_of"])
    )
    page = model_page(
        doc, charts, badge_svg=badge_svg(doc.model, 2297.0), root="../../", badge_href="b.svg"
    )
    for text in ("2.30 s", "10.90 s", "175 tok/s", "2.9%", "688.8K tokens / 7d", "2297ms p50"):
        assert text in page
    assert page.count('class="chart-box"') == 4
    assert "<script" not in page
    # no URL that a browser would fetch: only the data: favicon and in-tree links
    fetched = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(u.startswith(("data:", "../../")) for u in fetched if not u.startswith("#"))
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_index_page_lists_models() -> None:
    entries = [
        {
            "model": "a/b",
            "page": "models/a/b.html",
            "requests": 1234,
            "display": {
                "ttft_p50": "1.00 s",
                "ttft_p95": "2.00 s",
                "output_speed": "10 tok/s",
                "error_rate": "0.0%",
                "traffic": "1.0K tokens / 7d",
            },
        }
    ]
    page = index_page(entries, as_of="2025-05-01T12:00:30.123Z")
    assert 'href="models/a/b.html"' in page and "1,234" in page and "2025-05-01 12:00 UTC" in page


def test_display_strings_are_escaped(make_row: Any) -> None:
    row = make_row(error_rate=0.0001)  # "<0.1%"
    doc = build_documents([row], max_age=None).documents[0]
    page = model_page(doc, [], badge_svg="", root="../", badge_href="b.svg")
    assert "&lt;0.1%" in page and "<0.1%" not in page
