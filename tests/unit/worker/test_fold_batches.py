"""fold_records with records that carry many events: identity is (offset, line)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from processors.worker.fold import Record, fold_records
from processors.worker.records import BucketRecord
from processors.worker.seen import BLOCK_ENTRIES, SeenIds, block_partition, decode_block
from schemas.event_record import RECORD_HEADERS

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)
NOW_S = NOW.timestamp()


def _doc(factory: Any, **overrides: Any) -> dict[str, Any]:
    overrides.setdefault("ts", (NOW - timedelta(minutes=5)).isoformat())
    doc: dict[str, Any] = factory(**overrides)
    return doc


def _record(offset: int, docs: list[dict[str, Any]], *, partition: int = 0) -> Record:
    value = b"\n".join(orjson.dumps(d) for d in docs)
    return Record(partition, offset, value, RECORD_HEADERS)


def _fold(records: list[Record], buckets: dict, seen: dict, now_s: float = NOW_S) -> Any:
    return fold_records(records, buckets, seen, SeenIds(seen.items()), now=NOW, now_s=now_s)


def _requests(buckets: dict[bytes, bytes]) -> int:
    return sum(BucketRecord.from_bytes(v).bucket.requests for k, v in buckets.items())


def test_a_copy_inside_one_record_counts_once_and_the_record_replays_whole(
    event_factory: Any,
) -> None:
    a, b = _doc(event_factory), _doc(event_factory)
    records = [_record(0, [a, b, a]), _record(1, [b, _doc(event_factory)])]
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    stats = _fold(records, buckets, seen)
    assert (stats.counted, stats.duplicates, stats.replayed) == (3, 2, 0)
    # Redelivered after a crash: every line is recognised as itself.
    again = _fold(records, buckets, seen, NOW_S + 5)
    assert (again.counted, again.duplicates, again.replayed) == (0, 2, 3)
    assert _requests(buckets) == 3


def test_bad_lines_are_reported_with_their_place_and_neighbours_count(
    event_factory: Any,
) -> None:
    good = [_doc(event_factory) for _ in range(3)]
    value = (
        orjson.dumps(good[0])
        + b"\r\n\n"  # CRLF and an empty line
        + b'{"event_id": 1}\n'
        + orjson.dumps(good[1])
        + b"\nnot json\n"
        + orjson.dumps(good[2])
    )
    buckets: dict[bytes, bytes] = {}
    stats = _fold([Record(0, 7, value)], buckets, {})
    assert stats.counted == 3
    assert [(o, line, why.field) for o, line, why in stats.invalid] == [
        (7, 1, "event_id"),
        (7, 3, "$"),
    ]


def test_a_record_in_a_format_we_do_not_read_is_refused_whole(event_factory: Any) -> None:
    rec = Record(0, 3, orjson.dumps(_doc(event_factory)), [("content-type", b"application/avro")])
    stats = _fold([rec], {}, {})
    assert stats.counted == 0
    [(offset, _, why)] = stats.invalid
    assert offset == 3 and why.field == "content-type"


def test_seen_blocks_stay_under_the_request_size(event_factory: Any) -> None:
    n = BLOCK_ENTRIES + 10
    docs = [_doc(event_factory) for _ in range(n)]
    records = [_record(i, docs[i * 1000 : (i + 1) * 1000]) for i in range((n + 999) // 1000)]
    seen: dict[bytes, bytes] = {}
    stats = _fold(records, {}, seen)
    assert stats.counted == n
    assert len(stats.seen_blocks) == 2
    assert all(len(v) < 1_000_000 for v in seen.values())
    assert sum(len(decode_block(v)) for v in seen.values()) == n
    assert {block_partition(k) for k in seen} == {0}


def test_a_run_folded_in_chunks_counts_as_one_run(event_factory: Any, monkeypatch: Any) -> None:
    """Chunks bound memory; a copy in a later chunk is still a duplicate."""
    import processors.worker.fold as fold_module

    docs = [_doc(event_factory, provider=p) for p in "xyzxyzxyz" * 10]
    records = [_record(i, docs[i * 3 : (i + 1) * 3]) for i in range(30)]
    records.append(_record(30, [docs[0], docs[50]]))  # copies of earlier events
    whole: dict[bytes, bytes] = {}
    one = _fold(records, whole, {})
    monkeypatch.setattr(fold_module, "CHUNK_BYTES", 1)  # a record a chunk
    monkeypatch.setattr(fold_module, "LOADED_MAX", 1)  # written back after every chunk
    chunked: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    many = _fold(records, chunked, seen)
    assert (many.counted, many.duplicates) == (one.counted, one.duplicates) == (90, 2)
    assert chunked == whole
    assert len(many.seen_blocks) > 1
    assert None in many.changed.values()  # released early, written already
    # Replayed, chunk by chunk, nothing counts again.
    again = _fold(records, chunked, seen, NOW_S + 5)
    assert (again.counted, again.replayed) == (0, 90)
    assert chunked == whole


def test_adds_held_for_the_run_or_applied_early_count_the_same(
    event_factory: Any, monkeypatch: Any
) -> None:
    """A run notes each chunk's events and adds them to their buckets once (``_RunBuckets``).

    The buckets of many hours and providers, each touched by several chunks,
    end the same whether the adds wait for the end of the run or are applied
    after every chunk; and each record's applied offset is the run's last.
    """
    import processors.worker.fold as fold_module

    docs = [
        _doc(
            event_factory,
            provider=p,
            ts=(NOW - timedelta(hours=h, minutes=5)).isoformat(),
            ttft_ms=100.0 + 37 * i,
            latency_ms=5000.0 + 11 * i,
            output_tokens=3 + i,
        )
        for i, (p, h) in enumerate([(p, h) for h in range(6) for p in "xyz"] * 4)
    ]
    records = [_record(i, docs[i * 3 : (i + 1) * 3]) for i in range(len(docs) // 3)]
    monkeypatch.setattr(fold_module, "CHUNK_BYTES", 1)  # a record a chunk
    held: dict[bytes, bytes] = {}
    one = _fold(records, held, {})
    monkeypatch.setattr(fold_module, "ADDS_MAX", 1)  # applied after every chunk
    early: dict[bytes, bytes] = {}
    many = _fold(records, early, {})
    assert one.counted == many.counted == len(docs)
    assert early == held
    assert len(one.changed) == 18
    # Hour h is in records h, 6 + h, 12 + h and 18 + h.
    hours = {k.hour for k in one.changed}
    assert {k: rec.applied[0] for k, rec in one.changed.items()} == {
        k: 18 + (max(hours) - k.hour) for k in one.changed
    }
    assert _requests(held) == len(docs)


def test_a_run_that_starts_with_a_replay_counts_only_what_is_new(
    event_factory: Any, monkeypatch: Any
) -> None:
    """Rule 1 per slot: records already folded replay, the rest of the same run counts."""
    import processors.worker.fold as fold_module

    monkeypatch.setattr(fold_module, "CHUNK_BYTES", 1)  # a record a chunk
    docs = [_doc(event_factory, provider=p) for p in "xyxyxyxyxyxyxyxyxyxy"]
    records = [_record(i, docs[i * 2 : (i + 1) * 2]) for i in range(10)]
    whole: dict[bytes, bytes] = {}
    _fold(records, whole, {})
    parts: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    first = _fold(records[:4], parts, seen)
    # The worker died before its offsets were committed: records 2.. again.
    rest = fold_records(
        records[2:],
        parts,
        seen,
        SeenIds(seen.items()),
        now=NOW,
        now_s=NOW_S + 5,
        replay_below=4,
    )
    assert (first.counted, rest.counted, rest.replayed) == (8, 12, 4)
    assert parts == whole
    assert set(rest.rewritten) == set(rest.changed)  # both buckets were replayed and grew


def test_a_store_that_writes_many_gets_each_run_s_records_at_once(event_factory: Any) -> None:
    """The worker's table takes a run's bucket records in one call (``WritesMany``),
    with the run's partition; what it holds then is what key-by-key writes leave."""

    class Many(dict[bytes, bytes]):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[int, int]] = []

        def write_many(self, partition: int, items: Any) -> None:
            self.calls.append((partition, len(items)))
            self.update(items)

    docs = [_doc(event_factory, provider=p) for p in "xyzxyz"]
    records = [_record(i, docs[i * 2 : (i + 1) * 2], partition=3) for i in range(3)]
    one_by_one: dict[bytes, bytes] = {}
    _fold(records, one_by_one, {})
    many = Many()
    result = _fold(records, many, {})
    assert dict(many) == one_by_one
    assert many.calls == [(3, 3)]  # three buckets changed, none rewritten
    assert len(result.changed) == 3
