"""`telemetry demo`: a simulated week and a live minute, end to end, on this machine."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from processors.export.document import display_strings, honest_figures
from processors.export.run import ExportOptions, export_once
from processors.store import open_store
from schemas.settings import Settings
from simulator.generator import Simulator
from simulator.run import SimulationPlan, simulate
from simulator.targets import HttpTarget, encode_lines
from telemetry.context import console, err_console, fail, settings_from
from telemetry.pipeline import require
from telemetry.pipeline.embedded import EmbeddedPipeline
from telemetry.safe_text import safe_text
from telemetry.service.run import RunConfig, run_embedded

MIN_SAMPLE = 100


def demo_progress() -> Progress:
    """The demos' progress bars (one task per stage, with a note)."""
    return Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=err_console,
    )


def _backfill(pipeline: EmbeddedPipeline, sim: Simulator, days: float, events: int) -> None:
    ingest = pipeline.open_ingest()
    with demo_progress() as progress:
        task = progress.add_task("backfill", total=events, note=f"{days:g} days of traffic")

        def chunks() -> Iterator[bytes]:
            for batch in sim.backfill(days=days, events=events, batch_size=20_000):
                yield encode_lines(batch)

        def advanced(report: Any) -> None:
            progress.update(task, completed=report.accepted, note=f"{report.stored:,} stored")

        report = ingest(chunks(), source="demo", on_batch=advanced).report
        progress.update(
            task,
            completed=report.accepted,
            note=f"{report.stored:,} stored, {report.duplicates:,} resent copies dropped",
        )


async def _live(settings: Settings, sim: Simulator, seconds: float, rate: float) -> None:
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_listening(url: str) -> None:
        if not listening.done():
            listening.set_result(url)

    config = RunConfig(host="127.0.0.1", port=0, refresh_every_s=5.0, export_every_s=None)
    service = asyncio.create_task(
        run_embedded(
            settings,
            config,
            stop=stop,
            on_event=lambda _: None,
            on_listening=on_listening,
        )
    )
    waiting: set[asyncio.Future[Any]] = {service, listening}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if service in done:
        service.result()  # raises what stopped it
    url = listening.result()
    total = int(seconds * rate)
    with demo_progress() as progress:
        task = progress.add_task("live", total=total, note=f"POST {url}/v1/events")
        plan = SimulationPlan(rate=rate, duration_s=seconds, live_events=total)
        traffic = asyncio.create_task(
            simulate(sim, HttpTarget(url), plan, on_live=lambda n: progress.advance(task, n))
        )
        await asyncio.wait({service, traffic}, return_when=asyncio.FIRST_COMPLETED)
        if not traffic.done():
            # SIGTERM or Ctrl-C stopped the service (its own handlers): the
            # traffic would go on posting to nobody, so it stops too.
            traffic.cancel()
            await asyncio.gather(traffic, return_exceptions=True)
            service.result()
            fail("stopped before the demo finished; run it again for the page blocks")
        report = traffic.result()
        progress.update(
            task,
            completed=report.live,
            note=f"{report.target.accepted:,} accepted over HTTP",
        )
    stop.set()
    await service


def page_block(row: dict[str, Any], min_sample: int = MIN_SAMPLE) -> Panel:
    """A model's page block; the model name is the sender's text, shown literally."""
    figures, _ = honest_figures(row, min_sample)
    d = display_strings(figures)
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[dim]p50 TTFT[/] {d['ttft_p50']}",
        f"[dim]p95 TTFT[/] {d['ttft_p95']}",
        f"[dim]TRAFFIC[/] {d['traffic']}",
    )
    perf = Table.grid(padding=(0, 4))
    perf.add_row("[dim]TTFT p50[/]", d["ttft_p50"], "[dim]Output speed[/]", d["output_speed"])
    perf.add_row("[dim]TTFT p95[/]", d["ttft_p95"], "[dim]Error rate[/]", d["error_rate"])
    body = Table.grid()
    body.add_row(head)
    body.add_row("")
    body.add_row("[bold]Performance[/]")
    body.add_row(perf)
    title = safe_text(row["model"], style="bold")
    return Panel(body, title=title, title_align="left", expand=False)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        days: Annotated[float, typer.Option(help="days of traffic to backfill")] = 7,
        events: Annotated[int, typer.Option(help="events in the backfill")] = 150_000,
        live: Annotated[float, typer.Option(help="seconds of live traffic over HTTP")] = 30,
        rate: Annotated[float, typer.Option(help="live events per second")] = 200,
        seed: Annotated[int | None, typer.Option(help="simulator seed (default: random)")] = None,
        kafka: Annotated[
            bool,
            typer.Option(
                "--kafka",
                help="the whole cluster instead: a broker (deploy/local-kafka, unless "
                "TELEMETRY_KAFKA is set), the collector, two workers and the sink as "
                "processes; in DATA_DIR/demo-kafka",
            ),
        ] = False,
    ) -> None:
        """Backfill a simulated week, run live for a while, print every model's page block.

        Runs embedded (no broker) in the data directory: the same ingest path,
        aggregation and export as production. Afterwards `telemetry stats` and
        `telemetry sql` show what it produced. With --kafka: the distributed
        pipeline, one process per role, one worker SIGKILLed on the way, and a
        line comparing the events sent with those counted.
        """
        settings = settings_from(ctx)
        if days <= 0 or events <= 0 or live < 0 or rate <= 0:
            fail("--days, --events and --rate must be positive, --live at least 0", 2)
        seed = random.randrange(1 << 30) if seed is None else seed
        if kafka:
            from telemetry.commands.demo_kafka import KafkaDemoOptions, run_kafka_demo

            options = KafkaDemoOptions(
                days=days, events=events, live_s=live, rate=rate, seed=seed, min_sample=MIN_SAMPLE
            )
            raise typer.Exit(asyncio.run(run_kafka_demo(settings, options)))
        pipeline = require(
            settings,
            EmbeddedPipeline,
            "`telemetry demo` runs embedded: unset TELEMETRY_KAFKA, or add --kafka",
        )
        started = time.perf_counter()
        sim = Simulator(seed=seed)
        console.print(
            Text.assemble(
                Text("telemetry demo", style="bold"),
                safe_text(
                    f": {events:,} events over {days:g} days, then "
                    f"{live:g} s live at {rate:g}/s, in {settings.data_dir}"
                ),
            ),
            highlight=False,
        )
        _backfill(pipeline, sim, days, events)
        if live > 0:
            asyncio.run(_live(settings, sim, live, rate))

        ch = open_store(settings)
        from processors.embedded.refresh import refresh

        refresh(ch)
        out = settings.data_dir / "export"
        report = export_once(
            ch, ExportOptions(out=out, min_sample=MIN_SAMPLE, max_age=timedelta(minutes=10))
        )
        rows = ch.query_dicts(
            "SELECT * FROM telemetry.model_stats_7d WHERE provider = '' "
            "ORDER BY traffic_tokens DESC"
        )
        for row in rows:
            console.print(page_block(row))
        for line in (
            f"{len(rows)} models; export of {len(report.written)} models in {out}",
            f"open {out / 'index.html'} in a browser for the model pages and charts",
            'next: telemetry stats · telemetry sql "SELECT ..." · telemetry run',
            f"done in {time.perf_counter() - started:.0f} s",
        ):
            console.print(safe_text(line), highlight=False)
