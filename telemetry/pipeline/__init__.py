"""One front for the configured pipeline, chosen once: embedded (chDB) or Kafka.

Commands ask the front for what they need instead of each testing
``TELEMETRY_KAFKA`` again: a way to ingest NDJSON, the events topic's door
(where `simulate --to kafka` hands events over, through the ``Handoff`` seam of
``collector.handoff``), whether a read must fold new events into the stats
first, what is waiting to be processed (`telemetry status`), and the words
for messages. ``open_pipeline`` is the one place that looks at the setting;
commands that only make sense in one mode (`run` and `demo` embedded,
`collector` and `worker` on a broker) ``require`` that pipeline and fail in
one line without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeGuard, TypeVar

from schemas.errors import OperationalError
from schemas.settings import Settings
from telemetry.context import fail

if TYPE_CHECKING:
    from processors.clickhouse import ClickHouse
    from processors.embedded.ingest import IngestReport
    from simulator.targets import EventDoor
    from telemetry.pipeline.embedded import EmbeddedPipeline
    from telemetry.pipeline.kafka import KafkaPipeline
    from telemetry.service.control import ControlClient

__all__ = [
    "Backlog",
    "Ingest",
    "Ingested",
    "LagRow",
    "Pipeline",
    "StoreOwned",
    "open_pipeline",
    "require",
]


class StoreOwned(OperationalError):
    """The embedded store is owned by a running process, whose socket takes reads only."""


@dataclass
class LagRow:
    """Work waiting at one place of the pipeline (a row of `telemetry status`)."""

    who: str  # "worker", "sink" or "refresh" (embedded)
    topic: str
    partition: int | None
    lag: int
    end: int | None = None
    committed: int | None = None


@dataclass
class Backlog:
    """What waits, and how many dead letters are held (None: this part does not know)."""

    lag: list[LagRow] = field(default_factory=list)
    dead_letters: int | None = None


@dataclass
class Ingested:
    """One ingest run: the counts, and how the pipeline words its summary."""

    report: IngestReport
    #: the summary line's parenthesis: "N new, M duplicates" or "sent to TOPIC at HOST"
    detail: str
    #: a last line (timing), if the pipeline has one to say
    after: str | None = None


class Ingest(Protocol):
    def __call__(
        self,
        chunks: Iterable[bytes],
        *,
        source: str,
        on_batch: Callable[[IngestReport], None] | None = None,
    ) -> Ingested:
        """Validate NDJSON ``chunks``; keep valid events, keep and count rejected lines."""


class Pipeline(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def mode(self) -> str:
        """Which pipeline: "embedded" or "kafka" (`telemetry status --json`'s ``mode``)."""

    @property
    def where(self) -> str:
        """The pipeline in a title: "embedded" or "Kafka at HOST"."""

    @property
    def broker(self) -> str | None:
        """The Kafka bootstrap servers it runs on; None embedded."""

    @property
    def dead_letters(self) -> str:
        """Where rejected input is kept: the ``telemetry.rejected`` table or the DLQ topic."""

    def open_ingest(self) -> Ingest:
        """Ready to ingest; embedded, the store opens now (``StoreOwned`` if a process holds it)."""

    def topic_door(self) -> EventDoor | None:
        """The events topic's door for the simulator; None when there is no broker."""

    def refreshes(self, reader: object) -> TypeGuard[ClickHouse]:
        """Whether a read through ``reader`` must fold new events into the stats first.

        Only a store this process opened in embedded mode: on Kafka the
        workers keep the stats, and a running owner refreshes its own.
        """

    def backlog(self) -> Backlog:
        """What waits outside the store (Kafka: lag per partition, the DLQ's records)."""

    def store_backlog(self, reader: ClickHouse | ControlClient) -> Backlog:
        """What waits inside the store (embedded: rows not yet folded, rejected rows)."""


def open_pipeline(settings: Settings) -> EmbeddedPipeline | KafkaPipeline:
    """The pipeline ``settings`` describe: Kafka when ``TELEMETRY_KAFKA`` is set, else embedded."""
    if settings.kafka:
        from telemetry.pipeline.kafka import KafkaPipeline

        return KafkaPipeline(settings, settings.kafka)
    from telemetry.pipeline.embedded import EmbeddedPipeline

    return EmbeddedPipeline(settings)


P = TypeVar("P")


def require(settings: Settings, kind: type[P], message: str) -> P:
    """The configured pipeline if it is a ``kind``; else ``message`` in one line, exit 2."""
    pipeline = open_pipeline(settings)
    if not isinstance(pipeline, kind):
        fail(message, 2)
    return pipeline
