"""fold_records: exactly-once effect under at-least-once delivery, with dict stores.

Each message here is a one-event record; tests/unit/worker/test_fold_batches.py
folds records that carry many events."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processors.aggregate import BucketKey, HourBucket, hour_of, rolling_rows, window_start
from processors.worker.fold import DEDUP_WINDOW_S, Record, fold_records
from processors.worker.records import BucketRecord, decode_bucket_key, encode_bucket_key
from processors.worker.seen import Seen, SeenIds, decode_block, encode_block
from schemas.codec import encode_event, validate_event
from schemas.event import RequestEvent

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)
NOW_S = NOW.timestamp()
MODELS = ("m/a", "m/b")


@pytest.fixture
def make(event_factory: Any) -> Any:
    def build(**overrides: Any) -> RequestEvent:
        overrides.setdefault("ts", (NOW - timedelta(minutes=5)).isoformat())
        return validate_event(event_factory(**overrides), now=NOW)

    return build


def totals(buckets: dict[bytes, bytes]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The published figures of a bucket store, as comparable tuples."""
    decoded: dict[BucketKey, HourBucket] = {
        decode_bucket_key(k): BucketRecord.from_bytes(v).bucket for k, v in buckets.items()
    }
    return {(r.model, r.provider): r.as_tuple() for r in rolling_rows(decoded, NOW)}


def requests(buckets: dict[bytes, bytes]) -> int:
    return sum(BucketRecord.from_bytes(v).bucket.requests for v in buckets.values())


def Message(partition: int, offset: int, event: RequestEvent) -> Record:
    """A record holding one event, as a third-party producer writes it."""
    return Record(partition, offset, encode_event(event))


def fold(
    msgs: list[Record],
    buckets: dict[bytes, bytes],
    seen: dict[bytes, bytes],
    now_s: float = NOW_S,
) -> Any:
    """Fold one partition's run (split per partition, as the agent does).

    The seen index is rebuilt from the block store each call: what a
    restarted worker has is the store, never the memory of the last one.
    """
    ids = SeenIds(seen.items())
    stats = None
    for p in sorted({m.partition for m in msgs}):
        run = [m for m in msgs if m.partition == p]
        stats = fold_records(run, buckets, seen, ids, now=NOW, now_s=now_s)
    return stats


def test_duplicates_within_the_hour_count_once(make: Any) -> None:
    a, b = make(), make()
    msgs = [Message(0, 0, a), Message(0, 1, b), Message(0, 2, a), Message(0, 3, a)]
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    stats = fold(msgs, buckets, seen)
    assert (stats.counted, stats.duplicates, stats.replayed) == (2, 2, 0)
    # Again in a later batch, 59 minutes on: still a duplicate.
    stats = fold([Message(0, 4, a)], buckets, seen, now_s=NOW_S + DEDUP_WINDOW_S - 60)
    assert (stats.counted, stats.duplicates) == (0, 1)
    assert not stats.changed
    assert requests(buckets) == 2


def test_a_redelivered_copy_is_a_replay_not_another_duplicate(make: Any) -> None:
    """Faust can deliver a record twice (a seek after recovery): the copies in
    it were counted as duplicates the first time; the second time they are
    part of a replay, so the duplicates counter stays exact."""
    a, b = make(), make()
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    ids = SeenIds()
    first = fold_records(
        [Message(0, 0, a), Message(0, 1, b)], buckets, seen, ids, now=NOW, now_s=NOW_S
    )
    copies = [Message(0, 2, a), Message(0, 3, b)]
    stats = fold_records(copies, buckets, seen, ids, now=NOW, now_s=NOW_S, replay_below=2)
    assert (first.counted, stats.counted, stats.duplicates, stats.replayed) == (2, 0, 2, 0)
    again = fold_records(copies, buckets, seen, ids, now=NOW, now_s=NOW_S, replay_below=4)
    assert (again.counted, again.duplicates, again.replayed) == (0, 0, 2)
    assert requests(buckets) == 2


def test_a_record_delivered_twice_in_one_run_counts_once(make: Any) -> None:
    """Faust can hand over the same record twice in one batch (fetched before
    and after the seek that ends a recovery): each event counts once."""
    a, b = make(), make()
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    run = [Message(0, 5, a), Message(0, 6, b), Message(0, 5, a), Message(0, 6, b)]
    stats = fold_records(run, buckets, seen, SeenIds(), now=NOW, now_s=NOW_S)
    assert (stats.counted, stats.duplicates, stats.replayed) == (2, 0, 2)
    assert requests(buckets) == 2


def test_duplicate_on_another_partition_counts_once(make: Any) -> None:
    a = make()
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    assert fold([Message(0, 7, a)], buckets, seen).counted == 1
    stats = fold([Message(1, 3, a)], buckets, seen)
    assert (stats.counted, stats.duplicates) == (0, 1)
    assert requests(buckets) == 1


def test_duplicates_older_than_an_hour_count_again(make: Any) -> None:
    """docs/definitions.md: the same event delivered again *within an hour* counts once."""
    a = make()
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    fold([Message(0, 0, a)], buckets, seen)
    stats = fold([Message(0, 1, a)], buckets, seen, now_s=NOW_S + DEDUP_WINDOW_S + 1)
    assert (stats.counted, stats.duplicates) == (1, 0)
    assert requests(buckets) == 2
    # The seen record moved to the new message: a third copy within the hour is a dup.
    assert SeenIds(seen.items()).get(a.event_id.bytes).offset == 1  # type: ignore[union-attr]
    stats = fold([Message(0, 2, a)], buckets, seen, now_s=NOW_S + DEDUP_WINDOW_S + 60)
    assert (stats.counted, stats.duplicates) == (0, 1)
    assert requests(buckets) == 2


def test_same_message_redelivered_is_not_double_counted(make: Any) -> None:
    events = [make() for _ in range(5)]
    msgs = [Message(0, i, ev) for i, ev in enumerate(events)]
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    fold(msgs, buckets, seen)
    clean = totals(buckets)
    # The consumer restarts from an older committed offset: the batch comes again.
    stats = fold(msgs, buckets, seen, now_s=NOW_S + 10)
    assert (stats.counted, stats.duplicates) == (0, 0)
    assert stats.replayed == 5
    assert not stats.changed
    assert totals(buckets) == clean
    # Even more than an hour later (the seen entry is stale, the offsets still know).
    stats = fold(msgs, buckets, seen, now_s=NOW_S + 2 * DEDUP_WINDOW_S)
    assert stats.counted == 0 and stats.replayed == 5
    assert totals(buckets) == clean


class _Logged(dict[bytes, bytes]):
    """A local store whose writes also go to a changelog (a plain dict here)."""

    def __init__(self) -> None:
        super().__init__()
        self.changelog: dict[bytes, bytes] = {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        super().__setitem__(key, value)
        self.changelog[key] = value


def test_replay_rewrites_state_whose_changelog_writes_were_lost(make: Any) -> None:
    """SIGKILL after the local store took a batch but before its changelog did.

    The restarted worker replays the batch (the offsets were not committed):
    nothing is counted again, but the records it touches are written again,
    so a worker that later restores the partition from the changelog alone
    has every event.
    """
    msgs = [Message(0, i, make(provider=p)) for i, p in enumerate("xyxyxzz")]
    buckets, seen = _Logged(), _Logged()
    fold(msgs, buckets, seen)
    buckets.changelog.clear()  # the changelog messages never left the process
    seen.changelog.clear()
    stats = fold(msgs, buckets, seen, now_s=NOW_S + 5)
    assert (stats.counted, stats.replayed) == (0, len(msgs))
    assert buckets.changelog == dict(buckets)
    assert seen.changelog == dict(seen)
    # The next owner, restored from the changelog only, sees every event once.
    assert totals(dict(buckets.changelog)) == totals(dict(buckets))
    assert requests(buckets.changelog) == len(msgs)


def _traffic(make: Any, seed: int, n: int = 300) -> list[list[Record]]:
    """Two partitions (keyed by model), several hours, retries of recent events."""
    rng = random.Random(seed)
    parts: list[list[RequestEvent]] = [[], []]
    recent: list[RequestEvent] = []
    for _ in range(n):
        p = rng.randrange(2)
        ev = make(
            model=MODELS[p],
            provider=rng.choice(["x", "y"]),
            ts=(NOW - timedelta(minutes=rng.randrange(60 * 30))).isoformat(),
            ttft_ms=rng.uniform(10, 1000),
            latency_ms=rng.uniform(1000, 5000),
        )
        parts[p].append(ev)
        recent.append(ev)
        if rng.random() < 0.2:
            dup = rng.choice(recent[-20:])
            parts[MODELS.index(dup.model)].append(dup)
    return [[Message(p, o, ev) for o, ev in enumerate(evs)] for p, evs in enumerate(parts)]


def _run_clean(traffic: list[list[Record]], batch: int) -> dict[bytes, bytes]:
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    for lo in range(0, max(map(len, traffic)), batch):
        for msgs in traffic:
            if msgs[lo : lo + batch]:
                fold(msgs[lo : lo + batch], buckets, seen)
    return buckets


@pytest.mark.parametrize("lost", ["buckets", "seen"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crash_losing_one_store_then_refold_equals_a_clean_run(
    make: Any, lost: str, seed: int
) -> None:
    """A crash after one store's writes reached the changelog but not the other's.

    Fold a batch, throw away its writes to ONE of the two stores (restore the copy
    taken before), fold the same batch again: the totals equal a clean run.
    """
    traffic = _traffic(make, seed)
    batch = 40
    clean = totals(_run_clean(traffic, batch))

    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    for i, lo in enumerate(range(0, max(map(len, traffic)), batch)):
        for msgs in traffic:
            chunk = msgs[lo : lo + batch]
            if not chunk:
                continue
            if i % 2 == 0:  # every other batch crashes once
                saved = copy.deepcopy(buckets if lost == "buckets" else seen)
                fold(chunk, buckets, seen)
                target = buckets if lost == "buckets" else seen
                target.clear()
                target.update(saved)
            fold(chunk, buckets, seen)
    assert totals(buckets) == clean


@pytest.mark.parametrize("lost", ["buckets", "seen"])
def test_crash_then_redelivery_from_an_older_offset(make: Any, lost: str) -> None:
    """After the crash the consumer resumes from the last commit, two batches back."""
    traffic = _traffic(make, 9)
    clean = totals(_run_clean(traffic, 25))
    msgs = traffic[0]
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    fold(msgs[:25], buckets, seen)
    fold(msgs[25:50], buckets, seen)
    saved = copy.deepcopy(buckets if lost == "buckets" else seen)
    fold(msgs[50:75], buckets, seen)
    target = buckets if lost == "buckets" else seen
    target.clear()
    target.update(saved)
    for lo in range(25, len(msgs), 25):  # redelivered from offset 25
        fold(msgs[lo : lo + 25], buckets, seen)
    for lo in range(0, len(traffic[1]), 25):
        fold(traffic[1][lo : lo + 25], buckets, seen)
    assert totals(buckets) == clean


def test_events_outside_the_window_are_skipped(make: Any) -> None:
    start = window_start(NOW)
    inside = make(ts=start.isoformat())
    outside = make(ts=(start - timedelta(milliseconds=1)).isoformat())
    ancient = make(ts=(NOW - timedelta(days=30)).isoformat())
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    stats = fold(
        [Message(0, 0, inside), Message(0, 1, outside), Message(0, 2, ancient)], buckets, seen
    )
    assert (stats.counted, stats.outside_window) == (1, 2)
    assert [decode_bucket_key(k).hour for k in buckets] == [hour_of(start)]
    ids = SeenIds(seen.items())
    assert ids.get(outside.event_id.bytes) is None and ids.get(ancient.event_id.bytes) is None


def test_applied_offsets_are_per_partition(make: Any) -> None:
    a, b, c = make(), make(), make()
    buckets: dict[bytes, bytes] = {}
    seen: dict[bytes, bytes] = {}
    fold([Message(0, 100, a)], buckets, seen)
    # A lower offset on another partition is new, not a replay.
    stats = fold([Message(1, 5, b)], buckets, seen)
    assert (stats.counted, stats.replayed) == (1, 0)
    (key,) = buckets
    assert BucketRecord.from_bytes(buckets[key]).applied == {0: 100, 1: 5}
    # Partition 0 at or below its own mark is a replay; above it is new.
    assert fold([Message(0, 100, a)], buckets, seen).replayed == 1
    stats = fold([Message(0, 101, c)], buckets, seen)
    assert stats.counted == 1
    assert BucketRecord.from_bytes(buckets[key]).applied == {0: 101, 1: 5}
    assert BucketRecord.from_bytes(buckets[key]).bucket.requests == 3


def test_changed_records_are_written_back_once(make: Any) -> None:
    class CountingDict(dict[bytes, bytes]):
        writes = 0

        def __setitem__(self, key: bytes, value: bytes) -> None:
            type(self).writes += 1
            super().__setitem__(key, value)

    buckets = CountingDict()
    seen: dict[bytes, bytes] = {}
    msgs = [Message(0, i, make()) for i in range(20)]
    stats = fold(msgs, buckets, seen)  # type: ignore[arg-type]
    assert stats.counted == 20
    assert CountingDict.writes == len(buckets) == 1
    (key,) = stats.changed
    assert buckets[encode_bucket_key(key)] == stats.changed[key].to_bytes()


def test_record_bytes_round_trip(make: Any) -> None:
    b = HourBucket()
    b.add(make())
    rec = BucketRecord(b, {3: 2**40, 0: 7})
    back = BucketRecord.from_bytes(rec.to_bytes())
    assert back.applied == {0: 7, 3: 2**40}
    assert back.to_bytes() == rec.to_bytes()
    key = BucketKey("vendor/model:tag", "prov", 493_000)
    assert decode_bucket_key(encode_bucket_key(key)) == key
    entries = [(b"i" * 16, Seen(2, 9, 3, 1.5)), (b"j" * 16, Seen(2, 10, 0, 2.5))]
    assert decode_block(encode_block(entries)) == entries


def test_a_late_record_from_a_worker_that_lost_the_partition_is_not_restored() -> None:
    """Replayed in log order, an older state written late must not win."""
    ahead = BucketRecord(HourBucket(), {0: 500, 1: 7}).to_bytes()
    behind = BucketRecord(HourBucket(), {0: 480, 1: 7}).to_bytes()
    other = BucketRecord(HourBucket(), {0: 500}).to_bytes()
    assert BucketRecord.supersedes(ahead, behind)
    assert not BucketRecord.supersedes(behind, ahead)
    assert BucketRecord.supersedes(ahead, ahead)  # the same state again
    assert not BucketRecord.supersedes(other, ahead)  # partition 1 would go back
    assert BucketRecord.applied_of(ahead) == {0: 500, 1: 7}
