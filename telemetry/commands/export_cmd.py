"""`telemetry export`: publish the catalog export tree, once or on a schedule."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from processors.clickhouse import ClickHouse, Reader
from processors.export import badge
from processors.export.document import DEFAULT_MIN_SAMPLE, iso
from processors.export.errors import ExportConfigError
from processors.export.push import PushPolicy, token_from_env
from processors.export.run import ExportOptions, ExportReport, export_once
from processors.export.schedule import (
    EverySchedule,
    Schedule,
    parse_cron,
    parse_duration,
    run_scheduled,
)
from schemas.errors import TelemetryError
from telemetry.context import console, err_console, exit_code_for, fail, settings_from
from telemetry.pipeline import open_pipeline
from telemetry.safe_text import safe_text
from telemetry.service.control import ControlClient, open_reader

__all__ = ["register"]

_DEFAULT_MAX_AGE = "15m"
_SHOW_SKIPPED = 20


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def print_report(report: ExportReport) -> None:
    """What one export did; model names, reasons and the catalog's answers shown literally.

    Skipped models are exactly the names the export refused (``m/[/bold]``,
    escape sequences), and ``catalog answered`` is a remote server's text: all
    go through ``safe_text``, never through markup.
    """
    as_of = iso(report.as_of) if report.as_of else "—"
    console.print(
        Text.assemble(
            Text("export", style="bold green"),
            safe_text(
                f" {len(report.written)} models written, "
                f"{len(report.skipped)} skipped → {report.out} "
                f"({report.files} files, {_size(report.bytes)}), stats as of {as_of}, "
                f"took {report.timings.get('total', 0.0):.2f} s"
            ),
        ),
        highlight=False,
        soft_wrap=True,
    )
    for note in report.recovered:
        line = Text.assemble("  ", Text("recovered:", style="yellow"), " ", safe_text(note))
        console.print(line, highlight=False)
    if report.skipped:
        table = Table("skipped model", "why", title=None, show_edge=False, pad_edge=False)
        for s in report.skipped[:_SHOW_SKIPPED]:
            table.add_row(safe_text(s.model), safe_text(s.reason))
        if len(report.skipped) > _SHOW_SKIPPED:
            table.add_row(f"… {len(report.skipped) - _SHOW_SKIPPED} more", "see index.json")
        console.print(table)
    if report.pushed:
        failed = report.push_failures
        console.print(
            f"[bold]push[/] {len(report.pushed) - len(failed)} accepted, {len(failed)} failed",
            highlight=False,
        )
        table = Table("model", "result", "status", "attempts", "catalog answered", show_edge=False)
        for p in sorted(report.pushed, key=lambda p: (p.ok, p.model)):
            table.add_row(
                safe_text(p.model),
                "[green]ok[/]" if p.ok else "[red]failed[/]",
                str(p.status) if p.status is not None else "—",
                str(p.attempts),
                safe_text(p.message),
            )
        console.print(table)


def _max_age(text: str) -> timedelta | None:
    if text.strip().lower() in ("off", "none", "0"):
        return None
    return parse_duration(text, flag="--max-age")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        ctx: typer.Context,
        once: Annotated[
            bool, typer.Option("--once", help="export once and exit (default)")
        ] = False,
        every: Annotated[
            str | None, typer.Option(help="export now and then every DURATION, e.g. 5m")
        ] = None,
        cron: Annotated[
            str | None,
            typer.Option(help='export on a 5-field cron schedule (UTC), e.g. "*/5 * * * *"'),
        ] = None,
        out: Annotated[
            Path | None, typer.Option(help="the export tree [default: <data dir>/export]")
        ] = None,
        min_sample: Annotated[
            int,
            typer.Option(min=0, help="rates and percentiles from fewer samples are null / —"),
        ] = DEFAULT_MIN_SAMPLE,
        max_age: Annotated[
            str,
            typer.Option(help="fail when stats are older than this (off: never)"),
        ] = _DEFAULT_MAX_AGE,
        skip_stale: Annotated[
            bool,
            typer.Option(help="skip stale models instead of failing (fails if all are stale)"),
        ] = False,
        push: Annotated[
            str | None,
            typer.Option(
                metavar="URL",
                help="PUT each model document to URL/<model> (token: TELEMETRY_CATALOG_TOKEN)",
            ),
        ] = None,
        push_attempts: Annotated[int, typer.Option(min=1, help="tries per document")] = 5,
        badge_via: Annotated[str, typer.Option(help="router named on badges")] = badge.DEFAULT_VIA,
        fsync: Annotated[bool, typer.Option(help="flush files to disk before the swap")] = True,
        refresh: Annotated[
            bool | None,
            typer.Option(
                help="bring the embedded stats up to now before each export "
                "[default: when embedded]"
            ),
        ] = None,
    ) -> None:
        """Write the catalog export: per-model JSON, pages with charts, badges, index.

        The tree is replaced atomically; the same stats give byte-identical files.
        """
        settings = settings_from(ctx)
        if sum(bool(x) for x in (once, every, cron)) > 1:
            fail("--once, --every and --cron exclude each other: pick one", 2)
        try:
            schedule: Schedule | None = None
            if every:
                schedule = EverySchedule(parse_duration(every))
            elif cron:
                schedule = parse_cron(cron)
            options = ExportOptions(
                out=(out or settings.data_dir / "export").absolute(),
                min_sample=min_sample,
                max_age=_max_age(max_age),
                skip_stale=skip_stale,
                badge_via=badge_via,
                push_url=push,
                push_token=token_from_env() if push else None,
                push_policy=PushPolicy(attempts=push_attempts),
                fsync=fsync,
            )
            if push and not push.startswith(("http://", "https://")):
                raise ExportConfigError(f"--push {push!r}: must be an http:// or https:// URL")
        except ExportConfigError as exc:
            fail(str(exc), 2)

        try:
            ch = open_reader(settings)
            if isinstance(ch, ControlClient):
                # Another process owns the embedded store (`telemetry run`, the sink):
                # read through it. It keeps the stats current itself; a read-only
                # reader cannot refresh them.
                if refresh:
                    fail(
                        "--refresh: the store is owned by a running process "
                        f"({ch.owner}), which refreshes the stats itself; drop --refresh",
                        2,
                    )
                do_refresh = False
                console.print(safe_text(f"reading through {ch.owner}"), style="dim")
            else:
                do_refresh = open_pipeline(settings).refreshes(ch) if refresh is None else refresh
            try:
                if schedule is None:
                    report = _export(ch, options, refresh=do_refresh)
                    print_report(report)
                else:
                    _run_schedule(ch, options, schedule, refresh=do_refresh)
                    return
            finally:
                ch.close()
        except TelemetryError as exc:
            fail(str(exc), exit_code_for(exc))
        if report.push_failures:
            fail(f"{len(report.push_failures)} documents were not accepted by the catalog")


def _export(ch: Reader, options: ExportOptions, *, refresh: bool) -> ExportReport:
    """Embedded (no workers): fold new events into the stats first, so they are current."""
    if refresh and isinstance(ch, ClickHouse):
        from processors.embedded.refresh import refresh as refresh_stats

        refresh_stats(ch)
    return export_once(ch, options)


def _run_schedule(ch: Reader, options: ExportOptions, schedule: Schedule, *, refresh: bool) -> None:
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    console.print(
        safe_text(f"exporting to {options.out} {schedule.describe()}; Ctrl-C stops"),
        highlight=False,
    )

    def job() -> None:
        try:
            print_report(_export(ch, options, refresh=refresh))
        except (TelemetryError, OSError) as exc:
            line = Text.assemble(Text("export failed:", style="bold red"), " ", safe_text(exc))
            err_console.print(line, highlight=False, soft_wrap=True)

    run_scheduled(schedule, job, stop=stop)
    console.print("stopped")
