"""Each private name or hook of Faust and aiokafka the worker relies on is still there.

``processors/worker/faust_private.py`` lists them; an upgrade that removes or
renames one fails here, naming it, instead of breaking the exactly-once
effect quietly.
"""

from __future__ import annotations

import contextvars
import inspect
from typing import Any

import aiokafka
import faust
import faust.streams
import pytest
from faust.stores.rocksdb import Store as RocksStore
from faust.tables.base import Collection
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import Message

from processors.worker import faust_private as fp


def _has(owner: Any, name: str) -> None:
    where = getattr(owner, "__qualname__", repr(owner))
    assert hasattr(owner, name), f"{where}.{name} is gone: see processors/worker/faust_private.py"


def _params(fn: Any) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_current_event_context_variable() -> None:
    _has(faust.streams, "_current_event")
    assert isinstance(faust.streams._current_event, contextvars.ContextVar), (
        "faust.streams._current_event is no longer a ContextVar"
    )

    class Anchor:
        class message:
            topic, partition = "t", 3

    with fp.current_event(Anchor()):
        ev = faust.streams.current_event()
        assert ev is not None and ev.message.partition == 3, (
            "faust.streams.current_event() no longer reads _current_event"
        )
    assert faust.streams.current_event() is None


def test_store_reads_the_current_event_and_has_per_partition_dbs() -> None:
    _has(RocksStore, "_db_for_partition")
    assert _params(RocksStore._db_for_partition) == ["partition"]
    src = inspect.getsource(RocksStore._get)
    assert "current_event()" in src and "event.message.partition" in src, (
        "faust.stores.rocksdb.Store._get no longer picks the partition from the current event"
    )
    for name in ("apply_changelog_batch", "items", "_del"):
        _has(RocksStore, name)


@pytest.mark.parametrize(("name", "params"), fp.HOOKS, ids=[h[0] for h in fp.HOOKS])
def test_table_hooks_we_override(name: str, params: tuple[str, ...]) -> None:
    _has(Collection, name)
    assert _params(getattr(Collection, name)) == list(params), (
        f"faust Table.{name} changed its parameters"
    )
    _has(faust.Table, name)


def test_table_data_is_its_store() -> None:
    assert isinstance(inspect.getattr_static(Collection, "data", None), property), (
        "faust Table.data (the store) is gone"
    )
    assert "self.data.apply_changelog_batch" in inspect.getsource(
        Collection.apply_changelog_batch
    ), "faust Table.apply_changelog_batch no longer hands the batch to table.data"


def test_changelog_partition_check_can_be_marked_done() -> None:
    src = inspect.getsource(Collection._verify_source_topic_partitions)
    assert "if source_topic in self._verified_source_topics_for_partitions" in src, (
        "faust Table._verified_source_topics_for_partitions no longer skips the check"
    )
    assert "self._verified_source_topics_for_partitions: Set[str] = set()" in inspect.getsource(
        Collection.__init__
    ), "faust Table no longer keeps _verified_source_topics_for_partitions"


def test_app_attributes() -> None:
    for name in (
        "consumer_generation_id",
        "rebalancing",
        "flow_control",
        "on_partitions_revoked",
        "tables",
        "consumer",
        "agent",
        "timer",
    ):
        _has(faust.App, name)
    from mode.utils.queues import FlowControlEvent

    _has(FlowControlEvent, "is_active")


def test_message_ack_flag_and_generation() -> None:
    slots = set(Message.__slots__)
    for name in ("acked", "generation_id", "partition", "offset", "headers"):
        assert name in slots, f"faust Message.{name} is gone"
    src = inspect.getsource(faust.transport.consumer.Consumer.ack)
    assert "if not message.acked" in src, (
        "faust Consumer.ack no longer skips a message whose acked flag is set"
    )


def test_consumer_thread_committed_and_highwater() -> None:
    _has(ThreadDelegateConsumer, "highwater")
    _has(ThreadDelegateConsumer, "assignment")
    assert "self._thread" in inspect.getsource(ThreadDelegateConsumer), (
        "faust ThreadDelegateConsumer._thread is gone"
    )
    _has(AIOKafkaConsumerThread, "_ensure_consumer")
    _has(AIOKafkaConsumerThread, "call_thread")
    assert issubclass(AIOKafkaFaustConsumer, ThreadDelegateConsumer)
    _has(aiokafka.AIOKafkaConsumer, "committed")
    assert inspect.iscoroutinefunction(aiokafka.AIOKafkaConsumer.committed)
    assert _params(aiokafka.AIOKafkaConsumer.committed) == ["partition"]


def test_stream_take_events() -> None:
    _has(faust.Stream, "take_events")


def test_stream_internals_take_weighted_copies_from_take_events() -> None:
    # fp.take_weighted is take_events with a weight; it needs what take_events uses.
    for name in ("_enable_passive", "add_processor", "ack", "wait", "wait_for_stopped", "crash"):
        _has(faust.Stream, name)
    assert _params(faust.Stream._enable_passive) == ["channel", "declare"]
    src = inspect.getsource(faust.Stream.take_events)
    for needle in (
        "self._enable_passive(",
        "self._processors.remove(",
        "self.current_event",
        "self.enable_acks = False",
    ):
        assert needle in src, f"faust Stream.take_events no longer uses {needle!r}"
    init = inspect.getsource(faust.Stream.__init__)
    assert "self._active_agens" in init and "self._processors" in init, (
        "faust Stream._active_agens or Stream._processors is gone"
    )


def test_consumer_keeps_committed_offsets_in_memory() -> None:
    # processors/worker/metrics.py reads them for the lag gauge (fp.known_committed).
    src = inspect.getsource(faust.transport.consumer.Consumer)
    assert "self._committed_offset = defaultdict(" in src, (
        "faust Consumer._committed_offset is gone: see processors/worker/faust_private.py"
    )
    assert "self._committed_offset.update(committable_offsets)" in src


def test_faust_producer_holds_an_aiokafka_producer_in_the_loop() -> None:
    from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer

    _has(AIOKafkaFaustProducer, "_ensure_producer")
    src = inspect.getsource(AIOKafkaFaustProducer._ensure_producer)
    assert "self._producer" in src, "Faust's Producer._ensure_producer no longer returns _producer"
    app = faust.App("private-names-producer", broker="kafka://127.0.0.1:1")
    assert app.conf.producer_threaded is False, "Faust's producer now runs in its own thread"
    producer = app.producer
    assert isinstance(producer, AIOKafkaFaustProducer)
    sentinel = object()
    producer._producer = sentinel
    assert fp.kafka_producer(app) is sentinel
    for name in ("create_batch", "send_batch", "partitions_for"):
        _has(aiokafka.AIOKafkaProducer, name)


def test_what_the_changelog_outbox_does_in_fausts_place() -> None:
    """The outbox sends a table's changelog itself and records the offset as Faust would."""
    src = inspect.getsource(Collection._on_changelog_sent)
    assert "set_persisted_offset" in src, (
        "Faust no longer records a changelog write with store.set_persisted_offset"
    )
    _has(RocksStore, "set_persisted_offset")
    assert _params(RocksStore.set_persisted_offset) == ["tp", "offset"]
    assert "fut.message.partition" in inspect.getsource(faust.Table.on_key_set), (
        "Table.on_key_set no longer reads only message.partition of send_changelog's result"
    )
    app = faust.App("private-names-outbox", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("outbox-probe", key_type=bytes, value_type=bytes)
    assert table.changelog_topic.get_topic_name() == "private-names-outbox-outbox-probe-changelog"


def test_put_many_writes_as_the_store_writes_each_key(tmp_path: Any) -> None:
    """``put_many`` (one RocksDB write batch) leaves the partition's database and the
    key index as ``Store._set`` of each key does, on a real RocksDB store."""
    assert "self._key_index[key] = partition" in inspect.getsource(RocksStore._set), (
        "faust Store._set no longer records the key's partition in _key_index"
    )
    assert "WriteBatch(raw_mode=True)" in inspect.getsource(RocksStore.apply_changelog_batch), (
        "faust's rocksdict store no longer writes raw-mode write batches"
    )
    app = faust.App(
        "private-names-put-many",
        broker="kafka://127.0.0.1:1",
        store="rocksdb://",
        datadir=str(tmp_path),
    )
    one = app.Table("one", key_type=bytes, value_type=bytes, partitions=4)
    many = app.Table("many", key_type=bytes, value_type=bytes, partitions=4)
    items = [(b"k%d" % i, bytes([i]) * (i + 1)) for i in range(50)] + [(b"k3", b"again")]
    store_one, store_many = fp.table_store(one), fp.table_store(many)

    class Anchor:
        class message:
            topic, partition = "t", 2

    with fp.current_event(Anchor()):
        for key, value in items:
            store_one._set(key, value)
    fp.put_many(store_many, 2, items)
    for store in (store_one, store_many):
        db = fp.db_for_partition(store, 2)
        assert {k: db.get(k) for k, _ in items} == dict(items)
        assert all(store._key_index[k] == 2 for k, _ in items)
