"""`telemetry stats`: the current rolling 7-day stats."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import orjson
import typer
from rich.table import Table

from processors.export.display import STATS_TABLE_COLUMNS, stats_table_rows
from processors.export.document import iso
from processors.publication import published_is_current
from telemetry.context import console, settings_from
from telemetry.pipeline import open_pipeline
from telemetry.safe_text import safe_text
from telemetry.service.control import open_reader

_QUERY = (
    "SELECT * FROM telemetry.model_stats_7d "
    "WHERE ({model:String} = '' OR model = {model:String}) ORDER BY model, provider"
)


def register(app: typer.Typer) -> None:
    @app.command("stats")
    def stats(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Option("--model", "-m", help="only this model")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON array of rows")] = False,
        min_sample: Annotated[
            int, typer.Option(help="below this many samples a rate or percentile shows —")
        ] = 100,
    ) -> None:
        """Print the current rolling 7-day stats, per model and per (model, provider)."""
        settings = settings_from(ctx)
        ch = open_reader(settings)
        # Embedded, no `telemetry run` owning it: bring the window up to now
        # (nothing to do when the last publication is still current).
        if open_pipeline(settings).refreshes(ch) and not published_is_current(ch):
            from processors.embedded.refresh import refresh  # numpy, pyarrow: only to refresh

            refresh(ch)
        rows = ch.query_dicts(_QUERY, {"model": model or ""})
        if as_json:
            for r in rows:
                for k, v in r.items():
                    if isinstance(v, datetime):
                        r[k] = iso(v)
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
            return
        table = Table(*STATS_TABLE_COLUMNS, title="rolling 7 days")
        for cells in stats_table_rows(rows, min_sample=min_sample):
            table.add_row(*map(safe_text, cells))  # model and provider are the sender's text
        console.print(table)
        if rows:
            console.print(f"as of {rows[0]['as_of']:%Y-%m-%d %H:%M:%S} UTC", style="dim")
        else:
            console.print("no stats yet: ingest some events first", style="dim")
