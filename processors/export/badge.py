"""The embeddable badge, like the seed page's ``<model> · 2297ms p50 · via OrcaRouter``. Pure.

A flat, self-contained SVG (no fonts, images or scripts fetched): three
segments, the model slug, the p50 TTFT in whole milliseconds and "via <router>".
Widths come from a per-character estimate, so the same inputs always give the
same bytes.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from processors.export import display

__all__ = ["DEFAULT_VIA", "badge_svg"]

#: The router named on the badge (the seed page's).
DEFAULT_VIA = "OrcaRouter"
_HEIGHT = 20
_PAD = 6
_NARROW = set("fijlrt.,:;!|'I1 ()[]/")
_WIDE = set("mwMW@%")


def _text_width(text: str) -> int:
    """Approximate width in px of ``text`` at 11px sans-serif."""
    width = 0.0
    for ch in text:
        if ch in _NARROW:
            width += 3.6
        elif ch in _WIDE:
            width += 9.6
        elif ch.isupper() or ch.isdigit():
            width += 7.2
        else:
            width += 6.4
    return int(width + 0.5)


def badge_svg(model: str, ttft_p50_ms: float | None, *, via: str = DEFAULT_VIA) -> str:
    """The badge for one model; ``ttft_p50_ms`` None (withheld) shows ``— p50``."""
    parts = [model, f"{display.badge_ttft(ttft_p50_ms)} p50", f"via {via}"]
    fills = ["#2b2f36", "#0b7a55" if ttft_p50_ms is not None else "#8a8f98", "#4a5160"]
    widths = [_text_width(p) + 2 * _PAD for p in parts]
    total = sum(widths)
    label = escape(f"{model}: p50 TTFT {display.badge_ttft(ttft_p50_ms)} via {via}")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{_HEIGHT}" '
        f'viewBox="0 0 {total} {_HEIGHT}" role="img" aria-label="{label}">',
        f"<title>{label}</title>",
        '<clipPath id="r"><rect width="100%" height="100%" rx="3"/></clipPath>',
        '<g clip-path="url(#r)">',
    ]
    x = 0
    for width, fill in zip(widths, fills, strict=True):
        out.append(f'<rect x="{x}" width="{width}" height="{_HEIGHT}" fill="{fill}"/>')
        x += width
    out.append("</g>")
    out.append('<g fill="#fff" font-family="Verdana,DejaVu Sans,Geneva,sans-serif" font-size="11">')
    x = 0
    for width, part in zip(widths, parts, strict=True):
        out.append(f'<text x="{x + width // 2}" y="14" text-anchor="middle">{escape(part)}</text>')
        x += width
    out.append("</g></svg>")
    return "\n".join(out) + "\n"
