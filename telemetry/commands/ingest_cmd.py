"""`telemetry ingest FILE|-`: NDJSON events through the configured pipeline."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from processors.embedded.ingest import MAX_REJECTS_KEPT, IngestReport
from telemetry.context import console, err_console, fail, settings_from
from telemetry.pipeline import StoreOwned, open_pipeline
from telemetry.safe_text import safe_text

_CHUNK = 1 << 20


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
        pipeline = open_pipeline(settings_from(ctx))
        stream, size = _open(source)
        label = "stdin" if source == "-" else source
        try:
            ingest = pipeline.open_ingest()
        except StoreOwned as exc:
            # Owned by `telemetry run` (whose socket is read-only): its HTTP door takes events.
            fail(
                f"{exc}; while `telemetry run` owns it, send the events to its HTTP "
                "ingest instead (POST /v1/events, or telemetry simulate --to http://HOST:PORT)"
            )
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
            done = ingest(
                _chunks(stream, progress, task, head),
                source=f"ingest:{label}",
                on_batch=lambda r: progress.update(task, accepted=r.accepted),
            )
        _summary(done.report, done.detail, pipeline.dead_letters)
        _hint(done.report, head)
        if done.after:
            console.print(done.after, style="dim")


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
