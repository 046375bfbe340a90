"""`telemetry ingest FILE|-`: NDJSON events through the configured pipeline."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from processors.embedded.ingest import (
    DEFAULT_BATCH,
    MAX_REJECTS_KEPT,
    IngestReport,
    ingest_lines,
    validate_lines,
)
from processors.store import open_store
from schemas.codec import iter_ndjson
from schemas.errors import OperationalError
from schemas.settings import Settings
from telemetry.context import console, err_console, fail, settings_from
from telemetry.embedded.control import socket_path
from telemetry.safe_text import safe_text

if TYPE_CHECKING:
    from processors.kafka_io import EventProducer

_CHUNK = 1 << 20
_SAMPLES = 20


class _Head:
    """The first byte of the input that is not whitespace (what the input looks like)."""

    def __init__(self) -> None:
        self.byte = b""

    def see(self, chunk: bytes) -> None:
        if not self.byte:
            self.byte = chunk.lstrip()[:1]


def _chunks(
    stream: BinaryIO, progress: Progress | None, task: TaskID | None, head: _Head | None = None
) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        if progress is not None and task is not None:
            progress.advance(task, len(chunk))
        if head is not None:
            head.see(chunk)
        yield chunk


def _hint(report: IngestReport, head: _Head) -> None:
    """A file that is one JSON array (or pretty-printed JSON) is not NDJSON: say what to do."""
    if report.accepted == 0 and report.rejected and head.byte == b"[":
        err_console.print(
            "  the input looks like one JSON array; ingest reads NDJSON,", highlight=False
        )
        err_console.print(
            "  one event object per line (convert with: jq -c '.[]' FILE)", highlight=False
        )


def _open(source: str) -> tuple[BinaryIO, int | None]:
    if source == "-":
        return sys.stdin.buffer, None
    path = Path(source)
    if not path.is_file():
        fail(f"{source}: no such file (give an NDJSON file, or - for stdin)", 2)
    return path.open("rb"), path.stat().st_size


def _to_kafka(settings: Settings, stream: BinaryIO, source: str) -> IngestReport:
    """Valid events to the events topic; the first ``MAX_REJECTS_KEPT`` rejects to the DLQ."""
    from processors.kafka_io import EventProducer, dlq_record, ensure_topics  # Kafka mode only

    assert settings.kafka is not None  # guarded by the caller
    bootstrap = settings.kafka
    report = IngestReport()

    async def run() -> None:
        await ensure_topics(
            bootstrap,
            [settings.topic, settings.dlq_topic],
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
        )
        batch: list[tuple[int, bytes]] = []

        async def flush(producer: EventProducer) -> None:
            room = MAX_REJECTS_KEPT - report.rejected_kept
            good, bad, lines, bad_count = validate_lines(batch, source=source, keep=room)
            dlq = [
                dlq_record(
                    source=r.source, location=r.location, field=r.field, reason=r.reason, raw=r.raw
                )
                for r in bad
            ]
            await producer.send(settings.topic, good, dlq_topic=settings.dlq_topic, rejects=dlq)
            report.accepted += len(good)
            report.rejected += bad_count
            report.rejected_kept += len(bad)
            room = _SAMPLES - len(report.rejected_samples)
            report.rejected_samples.extend(
                (n, r.reason) for n, r in zip(lines[:room], bad[:room], strict=True)
            )
            batch.clear()

        async with EventProducer(bootstrap) as producer:
            for numbered in iter_ndjson(_chunks(stream, None, None)):
                batch.append(numbered)
                if len(batch) >= DEFAULT_BATCH:
                    await flush(producer)
            await flush(producer)

    asyncio.run(run())
    return report


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest(
        ctx: typer.Context,
        source: Annotated[str, typer.Argument(metavar="FILE|-", help="NDJSON events; - for stdin")],
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    ) -> None:
        """Validate NDJSON events and send them through the configured pipeline.

        Embedded (TELEMETRY_KAFKA unset): valid events are stored in
        telemetry.requests, rejected ones in telemetry.rejected with their
        reasons, and the rolling stats are refreshed. With TELEMETRY_KAFKA set:
        valid events go to the events topic (NDJSON batch records, each in its
        model's partition), rejected ones to the dead-letter topic. Prints
        accepted and rejected counts. Every rejected line is counted; the first
        10,000 of a run are kept (stored or dead-lettered), the others are not.
        """
        settings = settings_from(ctx)
        stream, size = _open(source)
        label = "stdin" if source == "-" else source
        if settings.kafka:
            sent = _to_kafka(settings, stream, f"ingest:{label}")
            _summary(sent, f"sent to {settings.topic} at {settings.kafka}", settings.dlq_topic)
            return
        try:
            ch = open_store(settings)
        except OperationalError as exc:
            if settings.clickhouse is None and socket_path(settings.data_dir).exists():
                # Owned by `telemetry run` (whose socket is read-only): its HTTP door takes events.
                fail(
                    f"{exc}; while `telemetry run` owns it, send the events to its HTTP "
                    "ingest instead (POST /v1/events, or telemetry simulate --to http://HOST:PORT)"
                )
            raise
        # What this process has loaded so far (modules, the engine's client)
        # lives as long as it does: out of the cyclic collector's way, whose
        # full passes would otherwise walk it again and again during the file.
        gc.freeze()
        head = _Head()
        show = not quiet and size is not None and err_console.is_terminal
        with Progress(
            TextColumn("[bold]ingest[/]"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%  {task.fields[accepted]} accepted"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not show,
        ) as progress:
            task = progress.add_task("ingest", total=size or 0, accepted=0)
            report = ingest_lines(
                ch,
                _chunks(stream, progress, task, head),
                source=f"ingest:{label}",
                on_batch=lambda r: progress.update(task, accepted=r.accepted),
            )
        extra = f"{report.stored} new, {report.duplicates} duplicates"
        _summary(report, extra, "telemetry.rejected")
        _hint(report, head)
        rate = report.accepted / report.elapsed_s if report.elapsed_s else 0
        console.print(
            f"{report.elapsed_s:.1f} s, {rate:,.0f} events/s; stats refreshed", style="dim"
        )


def _summary(report: IngestReport, extra: str, kept_in: str) -> None:
    """Counts, a few rejects with their reasons, and how many rejects were not kept."""
    console.print(f"accepted {report.accepted}, rejected {report.rejected} ({extra})")
    samples = report.rejected_samples
    for lineno, reason in samples:
        err_console.print(safe_text(f"  line {lineno}: {reason}"), highlight=False)
    if report.rejected_kept > len(samples):
        err_console.print(f"  … and {report.rejected_kept - len(samples)} more in {kept_in}")
    if report.rejected_not_kept:
        err_console.print(
            f"  {report.rejected_not_kept} rejected lines not kept: at most "
            f"{MAX_REJECTS_KEPT} per run go to {kept_in}"
        )
