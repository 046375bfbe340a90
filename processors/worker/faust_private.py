"""Every name of Faust (and of the aiokafka consumer inside it) the worker relies on
that is private, undocumented, or a hook we override.

faust-streaming is pinned; an upgrade that removes or renames one of these
breaks the exactly-once effect quietly (a wrong partition written, a batch
acknowledged that was not folded), not loudly. So the worker reaches them
only through this module, and ``tests/unit/worker/test_faust_private.py``
inspects each of them and fails naming the one that is gone.

What each is for (docs/architecture.md, "Exactly-once effect"):

* ``faust.streams._current_event``: the context variable the table store
  reads to pick the RocksDB partition and the changelog partition of a
  write; the worker sets it to fold one partition at a time.
* ``app.consumer_generation_id``: the consumer group generation, the fence
  of rule 4; ``message.generation_id`` is the generation a message was
  fetched in.
* ``app.rebalancing`` and ``app.flow_control.is_active()``: whether
  partitions are moving or the tables are still recovering (rule 4).
* ``message.acked``: setting it keeps Faust's ``ack`` from counting a
  message as done (a fenced or unfinished message stays unacknowledged).
* ``app.consumer.highwater(tp)`` and ``app.consumer.assignment()``.
* ``app.consumer._thread``, its ``call_thread`` and ``_ensure_consumer()``
  (the aiokafka consumer of the group), whose ``committed(tp)`` gives the
  group's committed offset (the known gap of rule 7, closed).
* ``app.consumer._committed_offset``: the committed offset Faust keeps in
  memory per partition (read at assignment, then at each of its commits),
  for the lag gauge of ``metrics.py`` without a request to the broker.
* ``Table.send_changelog``: overridden to hold our changelog writes for
  the ``ChangelogOutbox`` (rule 3), which ships them itself and then calls
  ``store.set_persisted_offset(tp, offset)`` as Faust's
  ``_on_changelog_sent`` does; ``table.changelog_topic.get_topic_name()``;
  ``Table.apply_changelog_batch``: overridden to restore no older bucket
  record (rule 6); ``table.data``: the table's store (its ``get``,
  ``items`` and ``__delitem__`` work on the partitions held);
  ``store._db_for_partition(p)``: one partition's RocksDB; ``put_many`` writes
  a fold's bucket records to it as one ``rocksdict.WriteBatch(raw_mode=True)``,
  as Faust's own ``apply_changelog_batch`` does, and notes each key's
  partition in ``store._key_index`` as ``Store._set`` does per key.
* ``table._verified_source_topics_for_partitions``: the source topics
  whose partition count Faust has checked against the changelog's at the
  first write; the worker checks it against the broker before Faust
  starts and marks it done, because Faust's check reads a consumer
  metadata cache that can show a just-created changelog with 0 partitions
  (``PartitionsMismatch``, an agent crash at the first write).
* ``take_weighted`` is Faust's ``Stream.take_events`` with one change: the
  buffer is also full once its records weigh ``max_weight`` (bytes), so a
  batch holds about as many *events* whether a record carries one or two
  thousand. It needs ``stream._enable_passive`` (the background drainer
  that feeds the buffering processor), ``stream._processors`` (to detach
  that processor) and ``stream._active_agens`` (so ``Stream.on_stop``
  closes the generator), as ``take_events`` does.
* ``app.producer._ensure_producer()``: the ``AIOKafkaProducer`` Faust runs
  (not threaded: ``producer_threaded`` is off), through which published rows
  leave as one producer batch per partition (``row_publisher.py``) instead
  of one Faust message each.
* ``app.on_partitions_revoked``, ``app.tables.beacon``, ``stream.add_processor``,
  ``stream.current_event``, ``stream.ack``, ``stream.wait``,
  ``stream.wait_for_stopped``: semi-public, listed so an upgrade is checked too.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import rocksdict
from faust.streams import _current_event  # the store picks its partition from it

__all__ = [
    "HOOKS",
    "committed_offset",
    "current_event",
    "db_for_partition",
    "flow_active",
    "generation",
    "highwater",
    "kafka_producer",
    "known_committed",
    "leave_unacknowledged",
    "rebalancing",
    "table_store",
    "take_weighted",
    "trust_changelog_partitions",
]

#: Methods of ``faust.Table`` the worker overrides: (name, parameters after self).
HOOKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "send_changelog",
        ("partition", "key", "value", "key_serializer", "value_serializer"),
    ),
    ("apply_changelog_batch", ("batch",)),
)


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make Faust's table stores take ``event``'s topic and partition for reads and writes."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def generation(app: Any) -> int:
    """The consumer group generation this worker is in."""
    return int(app.consumer_generation_id)


def rebalancing(app: Any) -> bool:
    return bool(app.rebalancing)


def flow_active(app: Any) -> bool:
    """False while Faust recovers tables after an assignment (no folding then)."""
    return bool(app.flow_control.is_active())


def highwater(app: Any, tp: Any) -> int | None:
    return app.consumer.highwater(tp)


def kafka_producer(app: Any) -> Any:
    """The ``AIOKafkaProducer`` inside Faust's producer (started with the app)."""
    return app.producer._ensure_producer()


def known_committed(app: Any, tp: Any) -> int | None:
    """The group's committed offset of ``tp`` as Faust last knew it (None: not known).

    From memory, no request to the broker: read when the partition was
    assigned, then updated at each of this worker's commits.
    """
    offset = app.consumer._committed_offset.get(tp)
    return None if offset is None else int(offset)


def leave_unacknowledged(events: Any) -> int:
    """Keep Faust from acknowledging these events; returns how many were not yet marked.

    Faust's ``ack`` returns early for a message whose ``acked`` is set, so it
    never enters the offsets Faust commits: the partition's owner reads it again.
    """
    n = 0
    for ev in events:
        if not ev.message.acked:
            ev.message.acked = True
            n += 1
    return n


async def committed_offset(app: Any, tp: Any) -> int | None:
    """The group's committed offset of ``tp``, asked of the broker (None: no commit).

    Faust's consumer runs aiokafka in a thread of its own: the call is made there.
    """
    thread = app.consumer._thread
    consumer = thread._ensure_consumer()
    offset = await thread.call_thread(consumer.committed, tp)
    return None if offset is None or offset < 0 else int(offset)


def trust_changelog_partitions(table: Any, source_topic: str) -> None:
    """Skip Faust's partition-count check of ``table``'s changelog for ``source_topic``.

    Only for a changelog the caller has checked against the broker itself.
    """
    table._verified_source_topics_for_partitions.add(source_topic)


def table_store(table: Any) -> Any:
    """The table's store (``table.data``): reads and deletes over the partitions held."""
    return table.data


def db_for_partition(store: Any, partition: int) -> Any:
    """One partition's RocksDB of a table store."""
    return store._db_for_partition(partition)


def put_many(store: Any, partition: int, items: Sequence[tuple[bytes, bytes]]) -> None:
    """``store._set`` of each (key, value) of one partition, in one RocksDB write.

    ``Store._set`` makes each write its own RocksDB write (and write-ahead
    log append): ~6 us each, the bucket records of a week-wide batch 4% of
    the worker's time. The keys and values are bytes, which the table's
    serializers pass through unchanged.
    """
    batch = rocksdict.WriteBatch(raw_mode=True)
    for key, value in items:
        batch.put(key, value)
    store._db_for_partition(partition).write(batch)
    index = store._key_index
    for key, _ in items:
        index[key] = partition


def take_weighted(
    stream: Any,
    max_records: int,
    max_weight: int | Callable[[], int],
    within: float,
    weight: Callable[[Any], int],
) -> AsyncIterator[list[Any]]:
    """Batches of a Faust stream's events, cut by count, by weight, or after ``within`` s.

    ``Stream.take_events`` cuts by record count only, and waits the whole
    ``within`` unless the count fills; with records of thousands of events a
    count that suits one-event records is never reached (the worker idles
    ``within`` after every batch), and one that suits batch records makes
    batches of a few events from other producers. Weighing by bytes bounds a
    batch's memory and fold time whatever a record holds.

    ``max_weight`` may be a callable, asked for the bound at the start of
    each batch (the worker's ``BatchBound``).

    Acknowledgement is ``take_events``': the events of a batch are acked once
    the consumer of the batch asks for the next one (or leaves), except those
    it marked with ``leave_unacknowledged``.
    """
    agen = _take_weighted(stream, max_records, max_weight, within, weight)
    stream._active_agens.add(agen)
    return agen


async def _take_weighted(
    stream: Any,
    max_records: int,
    max_weight: int | Callable[[], int],
    within: float,
    weight: Callable[[Any], int],
) -> AsyncIterator[list[Any]]:
    bound = max_weight if callable(max_weight) else (lambda: max_weight)
    limit = bound()
    events: list[Any] = []
    held = 0
    full = asyncio.Event()
    consumed = asyncio.Event()
    #: Set while the caller folds a batch: the processor waits on it, so no
    #: event joins a batch that is being folded.
    consuming: asyncio.Future[None] | None = None
    enable_acks = stream.enable_acks

    async def add_to_batch(value: Any) -> Any:
        nonlocal consuming, held
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_weighted found no current event")
            events.append(event)
            held += weight(value)
            if len(events) >= max_records or held >= limit:
                full.set()
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    # Acks are ours to make, once a batch is consumed.
    stream.enable_acks = False
    stream.add_processor(add_to_batch)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within)
            if not events:
                continue
            batch = list(events)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            consuming = fut
            try:
                yield batch
            finally:
                events.clear()
                held = 0
                limit = bound()
                for ev in batch:
                    await stream.ack(ev)
                if not fut.done():
                    fut.set_result(None)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_batch)
