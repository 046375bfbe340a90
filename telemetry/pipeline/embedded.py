"""The embedded pipeline: no broker; events go into chDB and a refresh folds them.

Ingest validates and stores a block at a time and refreshes the stats
(``processors.embedded.ingest``). Reads fold new events first when this
process opened the store itself; while `telemetry run` (or the sink) owns it,
they go through its control socket and that process keeps the stats current.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeGuard

from schemas.errors import OperationalError
from schemas.settings import Settings
from telemetry.pipeline import Backlog, Ingest, Ingested, LagRow, StoreOwned

if TYPE_CHECKING:
    from processors.clickhouse import ClickHouse
    from processors.embedded.ingest import IngestReport
    from simulator.targets import EventDoor
    from telemetry.service.control import ControlClient

__all__ = ["EmbeddedPipeline"]


class EmbeddedPipeline:
    mode = "embedded"
    where = "embedded"
    broker: str | None = None
    dead_letters = "telemetry.rejected"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open_ingest(self) -> Ingest:
        """Open the store for writing; ``StoreOwned`` if a running process holds it."""
        from processors.embedded.ingest import ingest_lines
        from processors.store import open_store
        from telemetry.service.control import socket_path

        settings = self.settings
        try:
            ch = open_store(settings)
        except OperationalError as exc:
            if settings.clickhouse is None and socket_path(settings.data_dir).exists():
                raise StoreOwned(str(exc)) from None
            raise

        def ingest(
            chunks: Iterable[bytes],
            *,
            source: str,
            on_batch: Callable[[IngestReport], None] | None = None,
        ) -> Ingested:
            report = ingest_lines(ch, chunks, source=source, on_batch=on_batch)
            rate = report.accepted / report.elapsed_s if report.elapsed_s else 0
            return Ingested(
                report,
                detail=f"{report.stored} new, {report.duplicates} duplicates",
                after=f"{report.elapsed_s:.1f} s, {rate:,.0f} events/s; stats refreshed",
            )

        return ingest

    def topic_door(self) -> EventDoor | None:
        return None

    def refreshes(self, reader: object) -> TypeGuard[ClickHouse]:
        from processors.clickhouse import ClickHouse

        return isinstance(reader, ClickHouse) and reader.is_embedded

    def backlog(self) -> Backlog:
        return Backlog()

    def store_backlog(self, reader: ClickHouse | ControlClient) -> Backlog:
        from processors.embedded.refresh import unfolded_rows

        lag = [LagRow("refresh", "telemetry.requests", None, unfolded_rows(reader))]
        rejected = reader.query("SELECT count() FROM telemetry.rejected")
        return Backlog(lag, int(rejected[0][0]) if rejected else 0)
