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
* ``Table.send_changelog``: overridden to keep the futures of our
  changelog writes (rule 3); ``Table.apply_changelog_batch``: overridden to
  restore no older bucket record (rule 6); ``table.data``: the table's
  store (its ``get``, ``items`` and ``__delitem__`` work on the partitions
  held); ``store._db_for_partition(p)``: one partition's RocksDB.
* ``table._verified_source_topics_for_partitions``: the source topics
  whose partition count Faust has checked against the changelog's at the
  first write; the worker checks it against the broker before Faust
  starts and marks it done, because Faust's check reads a consumer
  metadata cache that can show a just-created changelog with 0 partitions
  (``PartitionsMismatch``, an agent crash at the first write).
* ``stream.take_events``, ``app.on_partitions_revoked``,
  ``app.tables.beacon``: semi-public, listed so an upgrade is checked too.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from faust.streams import _current_event  # the store picks its partition from it

__all__ = [
    "HOOKS",
    "committed_offset",
    "current_event",
    "db_for_partition",
    "flow_active",
    "generation",
    "highwater",
    "known_committed",
    "leave_unacknowledged",
    "rebalancing",
    "table_store",
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
