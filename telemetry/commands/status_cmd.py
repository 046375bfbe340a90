"""`telemetry status`: the pipeline's health in one table (or JSON).

Lag per partition (Kafka: the workers' consumer group per events partition,
and the sink's group per topic; embedded: raw events not yet folded by a
refresh), the age of the newest stats in the store against the stats
interval, the dead letters held (Kafka: records in the dead-letter topic;
embedded: rows of ``telemetry.rejected``) and the bytes waiting in the
collector's spool. Reads only: nothing joins a group, commits or refreshes.
An embedded store owned by a running process is read through its control
socket, as `telemetry stats` does. An unreachable broker is one line and
exit status 1; a store that does not answer is shown in its row.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from collector.spool import spooled_bytes
from schemas.errors import TelemetryError
from schemas.settings import Settings
from telemetry.context import console, settings_from
from telemetry.pipeline import Backlog, LagRow, Pipeline, open_pipeline
from telemetry.safe_text import safe_text
from telemetry.service.control import open_reader

#: Stats older than this many publication intervals are stale (the alert's rule too).
STALE_INTERVALS = 3


@dataclass
class Health:
    mode: str
    lag: list[LagRow] = field(default_factory=list)
    stats_as_of: str | None = None
    stats_age_s: float | None = None
    stats_interval_s: float = 0.0
    #: "ok" (at most 3 intervals old), "quiet" (older, but nothing is waiting to be
    #: folded or stored: no new events, so nothing new to publish) or "stale".
    stats_state: str | None = None
    stats_stale: bool | None = None
    store_error: str | None = None
    dead_letters: int | None = None
    dead_letters_source: str = ""
    spool_bytes: int = 0
    spool_dir: str = ""


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def gather(settings: Settings, spool_dir: Path) -> Health:
    """Everything the table shows; raises ``OperationalError`` if the broker is unreachable."""
    pipeline = open_pipeline(settings)
    health = Health(
        mode=pipeline.mode,
        stats_interval_s=settings.stats_interval_s,
        spool_dir=str(spool_dir),
        spool_bytes=spooled_bytes(spool_dir),
        dead_letters_source=pipeline.dead_letters,
    )
    _add(health, pipeline.backlog())
    _store(pipeline, health)
    if health.stats_age_s is not None:
        health.stats_state = stats_state(
            health.stats_age_s, settings.stats_interval_s, [r.lag for r in health.lag]
        )
        health.stats_stale = health.stats_state == "stale"
    return health


def _add(health: Health, backlog: Backlog) -> None:
    health.lag.extend(backlog.lag)
    if backlog.dead_letters is not None:
        health.dead_letters = backlog.dead_letters


def stats_state(age_s: float, interval_s: float, lags: list[int]) -> str:
    """How to read the newest stats' age.

    Workers publish a model's row when its figures change (and every row at
    each hour), so a quiet pipeline's newest stats age without anything being
    wrong. Past 3 intervals they are ``stale`` only while work is waiting (a
    lag above 0: events not yet folded, or rows not yet stored); with
    nothing waiting they are ``quiet``.
    """
    if age_s <= STALE_INTERVALS * interval_s:
        return "ok"
    return "stale" if any(lag > 0 for lag in lags) else "quiet"


def _store(pipeline: Pipeline, health: Health) -> None:
    try:
        ch = open_reader(pipeline.settings, readonly=True)
        rows = ch.query("SELECT count(), max(as_of) FROM telemetry.model_stats_7d_versions")
        if rows and rows[0][0]:
            as_of = _utc(rows[0][1])
            health.stats_as_of = as_of.isoformat()
            health.stats_age_s = max(0.0, (datetime.now(UTC) - as_of).total_seconds())
        _add(health, pipeline.store_backlog(ch))
    except TelemetryError as exc:
        health.store_error = str(exc)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(health: Health, where: str) -> Table:
    """The health as one rich table; data-derived text goes through ``safe_text``."""
    table = Table("part", "detail", "value", "state", title=safe_text(f"pipeline health ({where})"))
    for row in health.lag:
        if row.who == "worker":
            detail = f"{row.topic} [{row.partition}]"
            committed = "never committed" if row.committed is None else f"at {row.committed:,}"
            detail += f", end {row.end:,}, {committed}"
        elif row.who == "sink":
            detail = f"{row.topic} (all partitions)"
        else:
            detail = "events stored, not yet folded by a refresh"
        table.add_row(
            f"{row.who} lag", safe_text(detail), f"{row.lag:,}", "ok" if row.lag == 0 else "behind"
        )
    limit = STALE_INTERVALS * health.stats_interval_s
    if health.store_error is not None:
        table.add_row(
            "newest stats", "the store did not answer", "?", safe_text(health.store_error)
        )
    elif health.stats_age_s is None:
        table.add_row("newest stats", "none yet", "-", "empty")
    else:
        table.add_row(
            "newest stats",
            f"as of {datetime.fromisoformat(health.stats_as_of or ''):%Y-%m-%d %H:%M:%S} UTC",
            f"{_age(health.stats_age_s)} old",
            {
                "ok": f"ok (under {_age(limit)})",
                "quiet": "quiet: no events since",
                "stale": f"stale (over {_age(limit)}, events waiting)",
            }.get(health.stats_state or "", "?"),
        )
    dead = "?" if health.dead_letters is None else f"{health.dead_letters:,}"
    table.add_row("dead letters", safe_text(health.dead_letters_source), dead, "")
    table.add_row(
        "spool",
        safe_text(health.spool_dir),
        _bytes(health.spool_bytes),
        "empty" if health.spool_bytes == 0 else "waiting for Kafka",
    )
    return table


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        spool_dir: Annotated[
            Path | None,
            typer.Option(help="the collector's spool directory [default: DATA_DIR/spool]"),
        ] = None,
    ) -> None:
        """The pipeline's health: lag per partition, age of the newest stats, DLQ, spool."""
        settings = settings_from(ctx)
        health = gather(settings, spool_dir or settings.data_dir / "spool")
        if as_json:
            sys.stdout.write(orjson.dumps(asdict(health)).decode() + "\n")
            return
        console.print(render(health, open_pipeline(settings).where))
