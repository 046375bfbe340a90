"""The badge is valid, self-contained SVG carrying the seed page's badge text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from processors.export.badge import badge_svg

SVG = "{http://www.w3.org/2000/svg}"


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_badge_text_and_validity() -> None:
    svg = badge_svg("openai/gpt-4.1-mini", 2297.0)
    assert _texts(svg) == ["openai/gpt-4.1-mini", "2297ms p50", "via OrcaRouter"]
    assert "href" not in svg and "<script" not in svg  # nothing fetched, nothing run
    assert svg == badge_svg("openai/gpt-4.1-mini", 2297.0)


def test_badge_escapes_and_withheld() -> None:
    svg = badge_svg("a/<b>&c", None, via="R&D")
    assert _texts(svg) == ["a/<b>&c", "— p50", "via R&D"]
    root = ET.fromstring(svg)
    segments = [r for r in root.iter(f"{SVG}rect") if r.get("x") is not None]
    assert len(segments) == 3
    assert int(root.get("width", "0")) == sum(int(r.get("width", "0")) for r in segments)
