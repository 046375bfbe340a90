"""`telemetry stats`: the current rolling 7-day stats."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from processors.embedded.refresh import refresh
from processors.store import open_store
from telemetry.context import console, settings_from

_QUERY = (
    "SELECT * FROM telemetry.model_stats_7d "
    "WHERE ({model:String} = '' OR model = {model:String}) ORDER BY model, provider"
)


def _fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}"
    return f"{v:,}{unit}"


def register(app: typer.Typer) -> None:
    @app.command("stats")
    def stats(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Option("--model", "-m", help="only this model")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON array of rows")] = False,
    ) -> None:
        """Print the current rolling 7-day stats, per model and per (model, provider)."""
        settings = settings_from(ctx)
        ch = open_store(settings)
        if settings.embedded and ch.is_embedded:
            refresh(ch)  # embedded: bring buckets and the window up to now
        rows = ch.query_dicts(_QUERY, {"model": model or ""})
        if as_json:
            for r in rows:
                for k, v in r.items():
                    if isinstance(v, datetime):
                        r[k] = v.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # stored in UTC
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
            return
        table = Table(
            "model",
            "provider",
            "requests",
            "traffic tokens",
            "TTFT p50",
            "TTFT p95",
            "output tok/s",
            "error rate",
            title="rolling 7 days",
        )
        for r in rows:
            rate = None if r["error_rate"] is None else r["error_rate"] * 100
            table.add_row(
                r["model"],
                r["provider"] or "(all)",
                _fmt(r["requests"]),
                _fmt(r["traffic_tokens"]),
                _fmt(r["ttft_p50_ms"], " ms", 0),
                _fmt(r["ttft_p95_ms"], " ms", 0),
                _fmt(r["output_tps_p50"], "", 0),
                _fmt(rate, "%", 1),
            )
        console.print(table)
        if rows:
            console.print(f"as of {rows[0]['as_of']:%Y-%m-%d %H:%M:%S} UTC", style="dim")
        else:
            console.print("no stats yet: ingest some events first", style="dim")
