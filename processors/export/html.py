"""Static HTML: ``index.html`` and one page per model. Pure: strings in, strings out.

Every page is self-contained: CSS inline, charts inline SVG, the badge
inline, no script, no web font, and an empty ``data:`` favicon so that the
browser does not go looking for one. Opened from disk, a page fetches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from processors.export.charts import Chart
from processors.export.display import MISSING
from processors.export.document import ModelDocument

__all__ = ["index_page", "model_page"]

_CSS = """
:root{color-scheme:light;--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--card:#f9fafb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:#fff}
main{max-width:980px;margin:0 auto;padding:24px 20px 48px}
a{color:#2563eb;text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:26px;margin:4px 0 2px}h2{font-size:19px;margin:28px 0 10px}
h3{font-size:14px;margin:0 0 4px;color:var(--muted);font-weight:600}
.slug{color:var(--muted);font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:14px}
.meta{color:var(--muted);font-size:13px}
.headline{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.headline>div{border:1px solid var(--line);border-radius:8px;padding:8px 12px;
background:var(--card)}
.headline .k{font-size:11px;letter-spacing:.06em;text-transform:uppercase;color:var(--muted)}
.headline .v{font-size:18px;font-weight:650}
.headline .u{color:var(--muted);font-size:12px;margin-left:4px}
.perf{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px}
.perf>div{border:1px solid var(--line);border-radius:10px;padding:14px 16px;background:var(--card)}
.perf .k{color:var(--muted);font-size:13px}.perf .v{font-size:24px;font-weight:650}
.note{color:var(--muted);font-size:12.5px;margin-top:8px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{padding:7px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{color:var(--muted);font-weight:600;font-size:12.5px}
.charts{display:grid;grid-template-columns:1fr;gap:18px}
.chart-box{border:1px solid var(--line);border-radius:10px;padding:12px 12px 6px}
svg.chart{width:100%;height:auto;display:block}
svg.chart .plot{fill:#fff}svg.chart .grid{stroke:#eef0f3}
svg.chart .tick{stroke:#e5e7eb;stroke-dasharray:2 3}
svg.chart text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#6b7280}
svg.chart text.legend{fill:#374151}svg.chart text.empty{font-size:13px}
.badge{margin:8px 0}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;background:var(--card);
padding:2px 4px;border-radius:4px;word-break:break-all}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _headline(key: str, value: str, unit: str) -> str:
    u = f'<span class="u">{unit}</span>' if unit else ""
    return f'<div><div class="k">{key}</div><span class="v">{value}</span>{u}</div>'


def _human_as_of(iso_ts: str) -> str:
    return f"{iso_ts[:10]} {iso_ts[11:16]} UTC"


def _withheld_note(part: Mapping[str, Any], min_sample: int) -> str:
    if not part["withheld"]:
        return ""
    return (
        f'<p class="note">{MISSING} : fewer than {min_sample} samples in the last 7 days; '
        "the figure is withheld rather than shown from a handful of requests.</p>"
    )


def model_page(
    doc: ModelDocument,
    charts: Sequence[Chart],
    *,
    badge_svg: str,
    root: str,
    badge_href: str,
) -> str:
    """The page of one model; ``root`` is the relative path back to the tree's top."""
    body = doc.body
    d = {k: escape(v) for k, v in body["display"].items()}
    model = escape(doc.model)
    as_of = _human_as_of(body["as_of"])
    rows = []
    for provider, part in body["providers"].items():
        pd = {k: escape(v) for k, v in part["display"].items()}
        rows.append(
            f"<tr><td>{escape(provider)}</td><td>{part['stats']['requests']:,}</td>"
            f"<td>{pd['ttft_p50']}</td><td>{pd['ttft_p95']}</td><td>{pd['output_speed']}</td>"
            f"<td>{pd['error_rate']}</td><td>{pd['traffic']}</td></tr>"
        )
    providers = (
        "<table><thead><tr><th>provider</th><th>requests</th><th>TTFT p50</th><th>TTFT p95</th>"
        "<th>output speed</th><th>error rate</th><th>traffic</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else '<p class="note">No per-provider rows.</p>'
    )
    chart_html = "\n".join(
        f'<div class="chart-box" id="chart-{c.key}" data-points="{c.points}">'
        f"<h3>{escape(c.title)}</h3>\n{c.svg}\n</div>"
        for c in charts
    )
    html_snippet = escape(f'<img src="{badge_href}" alt="{doc.model}">')
    content = f"""<p class="meta"><a href="{root}index.html">All models</a></p>
<h1>{escape(doc.model.rsplit("/", 1)[-1])}</h1>
<div class="slug">{model}</div>
<div class="headline">
{_headline("p50 TTFT", d["ttft_p50"], "7d")}
{_headline("p95 TTFT", d["ttft_p95"], "7d")}
{_headline("Traffic", d["traffic"], "")}
</div>
<h2>Performance</h2>
<div class="perf" id="performance">
<div><div class="k">TTFT p50</div><div class="v">{d["ttft_p50"]}</div></div>
<div><div class="k">Output speed</div><div class="v">{d["output_speed"]}</div></div>
<div><div class="k">TTFT p95</div><div class="v">{d["ttft_p95"]}</div></div>
<div><div class="k">Error rate</div><div class="v">{d["error_rate"]}</div></div>
</div>
{_withheld_note(body, body["min_sample"])}
<p class="meta">Rolling 7 days as of {as_of} · {body["stats"]["requests"]:,} requests</p>
<h2>Last 7 days, per hour</h2>
<div class="charts">
{chart_html}
</div>
<h2>Providers</h2>
{providers}
<h2>Embed this badge</h2>
<div class="badge">{badge_svg}</div>
<p class="meta">HTML <code>{html_snippet}</code></p>"""
    return _page(f"{doc.model} · performance", content)


def index_page(entries: Sequence[Mapping[str, Any]], *, as_of: str | None) -> str:
    """Every model with its headline figures, linking to its page."""
    rows = []
    for e in entries:
        d = {k: escape(v) for k, v in e["display"].items()}
        rows.append(
            f'<tr><td><a href="{escape(e["page"])}">{escape(e["model"])}</a></td>'
            f"<td>{e['requests']:,}</td><td>{d['ttft_p50']}</td><td>{d['ttft_p95']}</td>"
            f"<td>{d['output_speed']}</td><td>{d['error_rate']}</td>"
            f"<td>{d['traffic']}</td></tr>"
        )
    when = f"Rolling 7 days as of {_human_as_of(as_of)}" if as_of else "No stats yet"
    table = (
        "<table><thead><tr><th>model</th><th>requests</th><th>TTFT p50</th><th>TTFT p95</th>"
        "<th>output speed</th><th>error rate</th><th>traffic</th></tr></thead><tbody>"
        + "\n".join(rows)
        + "</tbody></table>"
    )
    content = f"""<h1>Models</h1>
<p class="meta">{when} · {len(entries)} models</p>
{table}"""
    return _page("Models · performance", content)
