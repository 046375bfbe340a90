"""`telemetry simulate`: synthetic gateway traffic to a file, Kafka, or the HTTP ingest."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from processors.export.schedule import parse_duration
from schemas.errors import ConfigError
from simulator import SimulationPlan, SimulationReport, Simulator, parse_target, simulate
from simulator.generator import DEFAULT_DUPLICATE_SHARE
from simulator.run import DEFAULT_EVENTS_PER_DAY
from simulator.targets import FileTarget
from telemetry.context import console, err_console, fail, settings_from
from telemetry.pipeline import open_pipeline
from telemetry.safe_text import safe_text

__all__ = ["register"]


def _parse_end(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        end = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--end {text!r}: not an RFC 3339 timestamp (e.g. 2026-01-01T00:00:00Z)", 2)
    if end.tzinfo is None:
        fail(f"--end {text!r}: give a UTC offset, e.g. 2026-01-01T00:00:00Z", 2)
    if end > datetime.now(UTC):
        fail(f"--end {text!r}: lies in the future; events would be rejected", 2)
    return end


def _span(days: float) -> str:
    return f"{days:g} days" if days >= 1 else f"{days * 24:.3g} hours"


def _print_report(out: Console, report: SimulationReport, plan: SimulationPlan) -> None:
    total = report.backfilled + report.live
    rate = total / report.elapsed_s if report.elapsed_s else 0.0
    parts = []
    if plan.backfill_days is not None:
        bf_rate = report.backfilled / report.backfill_s if report.backfill_s else 0.0
        parts.append(
            f"backfill {report.backfilled:,} over {_span(plan.backfill_days)} "
            f"({bf_rate:,.0f} events/s)"
        )
    if plan.rate is not None:
        parts.append(f"live {report.live:,} at {plan.rate:g}/s")
    out.print(
        f"[bold green]simulate[/] {total:,} events → {report.target.target}: "
        f"{', '.join(parts)}; {report.resent:,} resent copies (same event_id); "
        f"{report.elapsed_s:.1f} s, {rate:,.0f} events/s"
        + (" (stopped)" if report.stopped else ""),
        highlight=False,
        soft_wrap=True,
    )
    t = report.target
    if t.accepted is not None:
        out.print(f"service accepted {t.accepted:,}, rejected {t.rejected or 0:,}", highlight=False)
        for sample in t.rejected_samples:
            out.print(safe_text(f"  rejected: {sample}"), highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        ctx: typer.Context,
        to: Annotated[
            str,
            typer.Option(
                "--to",
                metavar="TARGET",
                help="file:PATH (file:- for stdout), kafka (TELEMETRY_KAFKA), or "
                "http://HOST:PORT (POST /v1/events; token from TELEMETRY_INGEST_TOKEN)",
            ),
        ] = "file:-",
        backfill: Annotated[
            str | None,
            typer.Option(
                metavar="DURATION",
                help="events over the last DURATION (e.g. 7d), as fast as possible",
            ),
        ] = None,
        rate: Annotated[
            float | None,
            typer.Option(min=0.001, help="live events per second, stamped now (after a backfill)"),
        ] = None,
        duration: Annotated[
            str | None,
            typer.Option(
                metavar="DURATION", help="how long live mode runs (default: until Ctrl-C)"
            ),
        ] = None,
        events: Annotated[
            int | None,
            typer.Option(
                min=1,
                help=f"backfill: how many events (default {DEFAULT_EVENTS_PER_DAY:,} a day); "
                "live only: stop after this many",
            ),
        ] = None,
        seed: Annotated[int, typer.Option(help="same seed and --end, same events")] = 0,
        end: Annotated[
            str | None,
            typer.Option(metavar="TIMESTAMP", help="end of the backfill window (default: now)"),
        ] = None,
        duplicates: Annotated[
            float,
            typer.Option(min=0.0, max=0.49, help="share of events a gateway resends (same id)"),
        ] = DEFAULT_DUPLICATE_SHARE,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    ) -> None:
        """Synthetic gateway traffic that looks like a real router's.

        Twelve models on one to four providers each, Zipf popularity, heavy-tailed
        TTFTs, per-provider speeds, every error type, provider incidents (errors
        and timeouts spike for about an hour), a daily cycle per region, and
        gateway retries that resend the same event_id.

        \b
        telemetry simulate --backfill 7d --to file:week.ndjson
        telemetry simulate --backfill 1d --events 50000 --to file:- | telemetry ingest -
        telemetry simulate --rate 200 --duration 30s --to http://127.0.0.1:8080
        telemetry simulate --backfill 7d --rate 50 --to kafka
        """
        settings = settings_from(ctx)
        if backfill is None and rate is None:
            fail("say what to simulate: --backfill 7d, --rate 200, or both", 2)
        if duration is not None and rate is None:
            fail("--duration applies to live mode: add --rate EVENTS_PER_S", 2)
        try:
            days = (
                parse_duration(backfill, flag="--backfill").total_seconds() / 86400
                if backfill
                else None
            )
            live_s = (
                parse_duration(duration, flag="--duration").total_seconds() if duration else None
            )
            target = parse_target(to, settings, lambda s: open_pipeline(s).topic_door())
        except ConfigError as exc:
            fail(str(exc), 2)
        plan = SimulationPlan(
            backfill_days=days,
            backfill_events=events if days is not None else None,
            end=_parse_end(end),
            rate=rate,
            duration_s=live_s,
            live_events=events if days is None else None,
        )
        sim = Simulator(seed=seed, duplicate_share=duplicates)
        out = err_console if isinstance(target, FileTarget) and target.to_stdout else console
        show = not quiet and err_console.is_terminal
        with Progress(
            TextColumn("[bold]{task.description}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not show,
            transient=False,
        ) as progress:
            bf_task = progress.add_task("backfill", total=plan.backfill_total) if days else None
            live_task = None

            def on_backfill(n: int) -> None:
                if bf_task is not None:
                    progress.advance(bf_task, n)

            def on_live(n: int) -> None:
                nonlocal live_task
                if live_task is None:
                    total = None
                    if live_s is not None and rate is not None:
                        total = round(live_s * rate)
                    if plan.live_events is not None:
                        total = plan.live_events
                    live_task = progress.add_task(f"live {rate:g}/s", total=total)
                progress.advance(live_task, n)

            async def main() -> SimulationReport:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                return await simulate(
                    sim, target, plan, stop=stop, on_backfill=on_backfill, on_live=on_live
                )

            report = asyncio.run(main())
        _print_report(out, report, plan)
