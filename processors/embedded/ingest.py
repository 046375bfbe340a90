"""NDJSON events into the embedded store: validate, keep rejects, dedupe, store, refresh.

A block at a time (``DEFAULT_BATCH`` lines), in bounded memory, whatever the
file's size:

* the input is cut into blocks by ``iter_text_blocks`` (the same lines and
  numbers as ``schemas.codec.iter_ndjson``), pieces of the input's own text;
* the engine reads the pieces itself into a session table (a server gets
  the lines as Arrow); one ``INSERT ... SELECT`` stages the lines that certainly keep the contract
  (``sql_check``: the SQL form of the rules, for the plain form encoders
  write), and ``schemas.batch.validate_lines`` decides every other line, with
  exactly the field and reason the per-event path gives;
* one more ``INSERT ... SELECT`` stores the staged events whose ``event_id``
  is neither stored yet nor earlier in the block: the dedup is a set
  operation in the database, not a lookup per event;
* the hour buckets are refreshed from what was stored (``refresh``) every
  ``REFRESH_EVERY`` rows and at the end, with the columnar fold.

Rejected lines are all counted, but only the first ``MAX_REJECTS_KEPT`` of a run
are stored in ``telemetry.rejected``: a file of millions of bad lines must not
cost millions of rows (the same rule as the HTTP door's, per file).

Running the same file again stores nothing new and counts nothing twice, also
after a SIGKILL at any point: an event is stored once per ``event_id`` (the
check runs against the table itself), and the refresh counts each stored row
once (``processors.embedded.refresh``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import pyarrow as pa

from processors.clickhouse import ClickHouse
from processors.embedded.blocks import TextBlock, iter_text_blocks
from processors.embedded.refresh import Refresher, RefreshReport
from processors.embedded.sql_check import sql_string, stage_valid_sql
from processors.sinks.rejected import Rejected, write_rejected
from schemas.batch import EventColumns
from schemas.batch import validate_lines as validate_batch
from schemas.codec import decode_event
from schemas.errors import InvalidEvent
from schemas.event import RequestEvent

__all__ = [
    "DEFAULT_BATCH",
    "MAX_REJECTS_KEPT",
    "IngestReport",
    "Staged",
    "Validated",
    "ingest_lines",
    "stage_lines",
    "validate_lines",
    "validate_part",
    "write_events",
]

#: Lines validated and stored at a time: large enough that per-block costs
#: (a handful of statements) vanish, small enough for bounded memory.
DEFAULT_BATCH = 50_000
#: Rejected lines stored per run (per file); the others are counted, not stored.
MAX_REJECTS_KEPT = 10_000
#: Fold stored rows into the buckets held in memory every this many events, so
#: that no read holds more than this many rows (a 1 GB file stays bounded); the
#: buckets are stored and the stats published once, at the end.
REFRESH_EVERY = 100_000
_SAMPLES = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The session table a block is staged in (per connection: ``TEMPORARY``).
_STAGE = "telemetry_ingest_block"
_STAGE_DDL = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE}
(
    pos UInt64, event_id FixedString(16), ts DateTime64(3, 'UTC'), gateway_id String,
    region Nullable(String), model String, provider String, stream Bool, status String,
    error_type Nullable(String), http_status UInt16, ttft_ms Nullable(Float64),
    latency_ms Float64, input_tokens UInt64, output_tokens UInt64, cached_input_tokens UInt64
) ENGINE = Memory
"""
#: The lines of a block (line number, text), for the SQL rules.
_RAW = "telemetry_ingest_lines"
_RAW_DDL = f"CREATE TEMPORARY TABLE IF NOT EXISTS {_RAW} (n UInt64, line String) ENGINE = Memory"
#: The engine's threads for the SQL rules: the block goes in as this many
#: inserts (parts of the lines table), each checked and staged by a thread of
#: its own. One part and one thread would leave all cores but one idle.
_THREADS = max(1, min(os.cpu_count() or 1, 8))
_STAGE_VALID = (
    stage_valid_sql(_RAW, _STAGE)
    + f"SETTINGS max_threads = {_THREADS}, max_insert_threads = {_THREADS}\n"
)
#: The block's events whose id is neither stored nor earlier in the block, as
#: the rows to store, in a session table: counting them there costs nothing,
#: where counting them once stored would read the store's columns each block.
_NEW = "telemetry_ingest_new"
_COLUMNS = (
    "event_id, schema_version, ts, gateway_id, region, model, provider, stream, status, "
    "error_type, http_status, ttft_ms, latency_ms, input_tokens, output_tokens, "
    "cached_input_tokens, ingested_at"
)
_NEW_DDL = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {_NEW}
(
    event_id UUID, schema_version UInt8, ts DateTime64(3, 'UTC'), gateway_id String,
    region Nullable(String), model String, provider String, stream Bool, status String,
    error_type Nullable(String), http_status UInt16, ttft_ms Nullable(Float64),
    latency_ms Float64, input_tokens UInt64, output_tokens UInt64, cached_input_tokens UInt64,
    ingested_at DateTime64(3, 'UTC')
) ENGINE = Memory
"""
#: ``LIMIT 1 BY`` after ``ORDER BY pos`` keeps an id's first copy, as the
#: per-event writer did; an id counts once whatever its ``ts``.
_SELECT_NEW = f"""
INSERT INTO {_NEW} ({_COLUMNS})
SELECT id, 1, ts, gateway_id, region, model, provider, stream, status, error_type,
    http_status, ttft_ms, latency_ms, input_tokens, output_tokens, cached_input_tokens,
    {{at:DateTime64(3, 'UTC')}}
FROM (SELECT *, toUUID(UUIDNumToString(event_id)) AS id FROM {_STAGE})
WHERE id NOT IN (
    SELECT event_id FROM telemetry.requests
    WHERE event_id IN (SELECT toUUID(UUIDNumToString(event_id)) FROM {_STAGE})
)
ORDER BY pos
LIMIT 1 BY id
"""
#: The one statement that stores them: a block is stored whole or not at all.
_STORE = f"INSERT INTO telemetry.requests ({_COLUMNS}) SELECT {_COLUMNS} FROM {_NEW}"


@dataclass(slots=True)
class IngestReport:
    lines: int = 0
    accepted: int = 0
    stored: int = 0
    #: every rejected line
    rejected: int = 0
    #: rejected lines stored in telemetry.rejected (at most ``MAX_REJECTS_KEPT``)
    rejected_kept: int = 0
    rejected_samples: list[tuple[int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    refresh: RefreshReport | None = None

    @property
    def duplicates(self) -> int:
        return self.accepted - self.stored

    @property
    def rejected_not_kept(self) -> int:
        return self.rejected - self.rejected_kept


class Validated(NamedTuple):
    events: list[RequestEvent]
    #: the first ``keep`` rejected lines, in order
    rejected: list[Rejected]
    #: the line number of each kept reject
    rejected_lines: list[int]
    #: every rejected line, kept or not
    rejected_count: int


def validate_lines(
    lines: Iterable[tuple[int, bytes]],
    *,
    source: str,
    now: datetime | None = None,
    keep: int = MAX_REJECTS_KEPT,
) -> Validated:
    """Split numbered lines into valid events and rejects (with line numbers), one by one.

    The Kafka path of `telemetry ingest` sends event objects; the embedded
    path validates whole blocks into columns instead (``ingest_lines``).
    Only the first ``keep`` rejects are kept; the others are counted, nothing more.
    """
    now = now or datetime.now(UTC)
    good: list[RequestEvent] = []
    bad: list[Rejected] = []
    bad_lines: list[int] = []
    count = 0
    for lineno, raw in lines:
        try:
            good.append(decode_event(raw, now=now))
        except InvalidEvent as exc:
            count += 1
            if len(bad) < keep:
                bad.append(Rejected(source, f"line {lineno}", exc.field, exc.reason, raw))
                bad_lines.append(lineno)
    return Validated(good, bad, bad_lines, count)


def _arrow_block(cols: EventColumns, positions: list[int]) -> pa.Table:
    """Valid events as one Arrow table for the staging table; ``pos`` orders copies of an id."""
    return pa.table(
        {
            "pos": pa.array(positions, pa.uint64()),
            "event_id": pa.array(cols.event_id, pa.binary(16)),
            "ts": pa.array(cols.ts_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "gateway_id": pa.array(cols.gateway_id, pa.string()),
            "region": pa.array(cols.region, pa.string()),
            "model": pa.array(cols.model, pa.string()),
            "provider": pa.array(cols.provider, pa.string()),
            "stream": pa.array(cols.stream, pa.bool_()),
            "status": pa.array(cols.status, pa.string()),
            "error_type": pa.array(cols.error_type, pa.string()),
            "http_status": pa.array(cols.http_status, pa.uint16()),
            "ttft_ms": pa.array(cols.ttft_ms, pa.float64()),
            "latency_ms": pa.array(cols.latency_ms, pa.float64()),
            "input_tokens": pa.array(cols.input_tokens, pa.uint64()),
            "output_tokens": pa.array(cols.output_tokens, pa.uint64()),
            "cached_input_tokens": pa.array(cols.cached_input_tokens, pa.uint64()),
        }
    )


def _us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class _Stamp:
    """``ingested_at`` of each block: now, and always later than the block before."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> datetime:
        ms = max(int(time.time() * 1000), self._last + 1)
        self._last = ms
        return datetime.fromtimestamp(ms / 1000, UTC)


_stamps = _Stamp()


def write_events(ch: ClickHouse, events: pa.Table) -> int:
    """Store the staged events and ``events`` whose ``event_id`` is new; return how many.

    ``events`` joins what ``stage_lines`` staged for the block; then one
    ``INSERT ... SELECT`` picks every staged event whose id is neither
    stored already nor on an earlier line (``pos``), and one more stores
    them. The stored rows carry one ``ingested_at`` per block.
    """
    at = _stamps.next()
    ch.command(_STAGE_DDL)
    ch.command(_NEW_DDL)
    ch.command(f"TRUNCATE TABLE {_NEW}")
    ch.insert_arrow(_STAGE, events)
    ch.command(_SELECT_NEW, {"at": at})
    rows = ch.query(f"SELECT count() FROM {_NEW}")
    ch.command(_STORE)
    ch.command(f"TRUNCATE TABLE {_STAGE}")
    ch.command(f"TRUNCATE TABLE {_NEW}")
    return int(rows[0][0])


class Part(NamedTuple):
    """Lines validated by the batch validator: the valid events as Arrow, the rejects by index."""

    events: pa.Table
    #: (index in the lines given, the rule it broke), in input order
    rejects: list[tuple[int, InvalidEvent]]


def validate_part(lines: list[bytes], positions: list[int], now: datetime) -> Part:
    """Validate lines with ``schemas.batch``; ``positions`` become the events' ``pos``."""
    valid = validate_batch(lines, now=now)
    events = _arrow_block(valid.events, [positions[i] for i in valid.events.index])
    return Part(events, valid.rejects)


#: A line the reader skips (``blocks.blank``): empty, or only what ``bytes.strip`` removes.
_BLANK_LINE = r"^[ \t\r\x0b\x0c]*$"


def _line_parts(numbers: list[int], lines: list[bytes]) -> list[pa.Table]:
    """Numbered lines as Arrow tables, one part per engine thread (``stage_lines``)."""
    table = pa.table({"n": pa.array(numbers, pa.uint64()), "line": pa.array(lines, pa.binary())})
    per_thread = max(1, -(-len(lines) // _THREADS))
    return [table.slice(start, per_thread) for start in range(0, len(lines), per_thread)]


def _read_pieces(ch: ClickHouse, block: TextBlock) -> None:
    """The block's pieces into the lines table, read by the engine (``LineAsString``).

    Each piece goes through a file of its own and one ``INSERT``: the engine
    cuts the lines, and a line's row number in its piece (one thread, in
    order) gives its line number. No Python step per line.
    """
    for piece in block.pieces:
        fd, name = tempfile.mkstemp(prefix="telemetry-ingest-", suffix=".ndjson")
        try:
            with os.fdopen(fd, "wb") as f:
                f.writelines(piece.parts)
            ch.command(
                f"INSERT INTO {_RAW} (n, line) SELECT {int(piece.first)} + rowNumberInAllBlocks(),"
                f" line FROM file({sql_string(name)}, 'LineAsString', 'line String')"
                " SETTINGS input_format_parallel_parsing = 0, max_threads = 1"
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)


class Staged(NamedTuple):
    """What ``stage_lines`` did with a block."""

    #: events staged (lines the SQL rules accept)
    staged: int
    #: (number, line) of every other line that is not blank, in input order
    rest: list[tuple[int, bytes]]


def stage_lines(ch: ClickHouse, block: TextBlock, now: datetime) -> Staged:
    """Stage the lines the SQL rules accept (``sql_check``); return the others.

    In chDB the engine reads the block's text itself (``_read_pieces``); a
    server gets the lines as Arrow. The events of the lines that pass are
    staged (``pos`` = line number) for ``write_events``; every other line
    that is not blank is the batch validator's to decide.
    """
    ch.command(_RAW_DDL)
    ch.command(_STAGE_DDL)
    ch.command(f"TRUNCATE TABLE {_RAW}")
    ch.command(f"TRUNCATE TABLE {_STAGE}")
    if ch.is_embedded:
        # One insert per piece: the Memory engine keeps an insert as one block
        # and reads a block with one thread, so one insert of the whole block
        # would leave the rules to one core (2.8 against 1.8 us a line on two).
        _read_pieces(ch, block)
    else:
        for part in _line_parts(*block.lines()):
            ch.insert_arrow(_RAW, part)
    ch.command(_STAGE_VALID, {"now_us": _us(now)})
    table = ch.query_arrow(
        f"SELECT n, line FROM {_RAW} WHERE n NOT IN (SELECT pos FROM {_STAGE})"
        f" AND NOT match(line, {sql_string(_BLANK_LINE)}) ORDER BY n"
    )
    count = ch.query(f"SELECT count() FROM {_STAGE}")[0][0]
    ch.command(f"TRUNCATE TABLE {_RAW}")
    rest = list(
        zip(
            table.column("n").to_pylist(),
            table.column("line").cast(pa.binary()).to_pylist(),
            strict=True,
        )
    )
    if block.long:
        rest = sorted(rest + block.long)
    return Staged(int(count), rest)


def ingest_lines(
    ch: ClickHouse,
    chunks: Iterable[bytes],
    *,
    source: str,
    batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[IngestReport], None] | None = None,
    do_refresh: bool = True,
    keep_rejects: int = MAX_REJECTS_KEPT,
    refresher: Refresher | None = None,
) -> IngestReport:
    """Store the valid events of ``chunks``, and the first ``keep_rejects`` rejected lines.

    Per block of ``batch_size`` lines: the SQL rules stage the lines that
    certainly keep the contract (``stage_lines``), the batch validator
    decides every other line (with the reasons users see), and
    ``write_events`` stores the block's new events. Without a ClickHouse
    handle (the writers replaced, as in tests) every line takes the batch
    validator.
    """
    report = IngestReport()
    started = time.perf_counter()
    since_refresh = 0
    if do_refresh and refresher is None:
        refresher = Refresher()
    pieces = _THREADS if isinstance(ch, ClickHouse) else 1
    for block in iter_text_blocks(chunks, block_lines=batch_size, pieces=pieces):
        now = datetime.now(UTC)
        if isinstance(ch, ClickHouse):
            staged, rest = stage_lines(ch, block, now)
        else:
            rest = list(zip(*block.lines(), strict=True))
            staged = 0
        part = validate_part([r[1] for r in rest], [r[0] for r in rest], now)
        room = keep_rejects - report.rejected_kept
        bad: list[Rejected] = []
        for j, exc in part.rejects[:room]:
            lineno, line = rest[j]
            bad.append(Rejected(source, f"line {lineno}", exc.field, exc.reason, line))
            if len(report.rejected_samples) < _SAMPLES:
                report.rejected_samples.append((lineno, exc.reason))
        write_rejected(ch, bad)
        accepted = staged + part.events.num_rows
        if accepted:
            report.stored += write_events(ch, part.events)
        report.accepted += accepted
        report.rejected += len(part.rejects)
        report.rejected_kept += len(bad)
        report.lines = block.last
        since_refresh += accepted
        if on_batch:
            on_batch(report)
        if refresher is not None and since_refresh >= REFRESH_EVERY:
            refresher.fold(ch)
            since_refresh = 0
    if refresher is not None:
        report.refresh = refresher.refresh(ch)
    report.elapsed_s = time.perf_counter() - started
    return report
