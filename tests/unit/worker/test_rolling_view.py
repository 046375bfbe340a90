"""RollingView: what a worker publishes, and that its cache never changes the numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.aggregate import (
    ALL_PROVIDERS,
    BucketKey,
    HourBucket,
    hour_of,
    hourly_rows,
    rolling_rows,
)
from processors.aggregate.window import window_start_hour
from processors.worker.rolling_view import RollingView
from schemas.stats import HourlyRow, StatsRow

T0 = datetime(2026, 3, 8, 12, 10, tzinfo=UTC)
H0 = hour_of(T0)


class Store(dict[BucketKey, HourBucket]):
    """The worker's table as the view sees it: load by key, None when absent."""

    def add(self, key: BucketKey, n: int = 1, ttft: float = 100.0) -> BucketKey:
        b = self.setdefault(key, HourBucket())
        for i in range(n):
            b.add_values(
                "ok" if i % 5 else "error",
                None if i % 5 else "timeout",
                ttft + i,
                ttft + 1000.0 + i,
                10,
                50,
            )
        return key

    def load(self, key: BucketKey) -> HourBucket | None:
        b = self.get(key)
        # A copy, as a real loader decodes bytes: the view must not rely on identity.
        return None if b is None else HourBucket.from_bytes(b.to_bytes())


def stats_of(rows: list[StatsRow]) -> dict[tuple[str, str], tuple[object, ...]]:
    return {(r.model, r.provider): r.as_tuple() for r in rows}


def hourly_of(rows: list[HourlyRow]) -> dict[tuple[str, str, datetime], tuple[object, ...]]:
    return {(r.model, r.provider, r.hour): r.as_tuple() for r in rows}


def populated() -> tuple[Store, RollingView]:
    store = Store()
    for h in range(H0 - 170, H0 + 1, 7):
        store.add(BucketKey("a", "p1", h), n=3, ttft=float(h % 50) * 10)
        store.add(BucketKey("a", "p2", h + 1), n=2)
        store.add(BucketKey("b", "p1", h + 2), n=4, ttft=900.0)
    store.add(BucketKey("c", "p3", H0), n=1)
    view = RollingView(store.load)
    view.reset(list(store))
    return store, view


def test_first_publication_is_everything_and_equals_rolling_rows() -> None:
    store, view = populated()
    pub = view.publish(T0)
    assert stats_of(pub.stats) == stats_of(rolling_rows(store, T0))
    assert {r.model for r in pub.stats} == {"a", "b", "c"}
    # After reset every hour in the window is due.
    assert hourly_of(pub.hourly) == hourly_of(hourly_rows(store, T0))


def test_between_rollovers_only_dirty_models_are_published() -> None:
    store, view = populated()
    view.publish(T0)
    t1 = T0 + timedelta(minutes=1)
    assert view.publish(t1).stats == []
    view.note(store.add(BucketKey("b", "p1", H0), n=2))
    pub = view.publish(t1 + timedelta(seconds=30))
    assert {(r.model, r.provider) for r in pub.stats} == {("b", "p1"), ("b", ALL_PROVIDERS)}
    want = stats_of(rolling_rows(store, t1 + timedelta(seconds=30)))
    assert stats_of(pub.stats) == {k: v for k, v in want.items() if k[0] == "b"}
    # Published once: not again until something changes.
    assert view.publish(t1 + timedelta(seconds=40)).stats == []


def test_hour_rollover_publishes_every_model() -> None:
    store, view = populated()
    view.publish(T0)
    view.publish(T0 + timedelta(minutes=5))
    t_next = T0 + timedelta(hours=1)
    pub = view.publish(t_next)
    assert {r.model for r in pub.stats} == {"a", "b", "c"}
    assert stats_of(pub.stats) == stats_of(rolling_rows(store, t_next))


def test_new_events_in_the_current_hour_are_seen_without_rollover() -> None:
    store, view = populated()
    view.publish(T0)
    for minute in range(1, 6):
        view.note(store.add(BucketKey("a", "p1", H0), n=minute))
        t = T0 + timedelta(minutes=minute)
        pub = view.publish(t)
        want = {k: v for k, v in stats_of(rolling_rows(store, t)).items() if k[0] == "a"}
        assert stats_of(pub.stats) == want


def test_late_event_in_a_past_hour_invalidates_the_cache() -> None:
    store, view = populated()
    view.publish(T0)
    view.note(store.add(BucketKey("a", "p1", H0), n=1))
    view.publish(T0 + timedelta(minutes=1))  # the finished-hours sum is cached now
    for late_hour, provider in ((H0 - 3, "p1"), (H0 - 100, "p2"), (H0 - 1, "new-provider")):
        view.note(store.add(BucketKey("a", provider, late_hour), n=5, ttft=5000.0))
        t = T0 + timedelta(minutes=2)
        pub = view.publish(t)
        want = {k: v for k, v in stats_of(rolling_rows(store, t)).items() if k[0] == "a"}
        assert stats_of(pub.stats) == want, late_hour
    # And the same after the next roll-over, for everyone.
    t = T0 + timedelta(hours=1, minutes=1)
    assert stats_of(view.publish(t).stats) == stats_of(rolling_rows(store, t))


def test_expired_keys_are_reported_once() -> None:
    store, view = populated()
    pub = view.publish(T0)
    first = window_start_hour(T0)
    assert sorted(pub.expired) == sorted(k for k in store if k.hour < first)
    assert pub.expired  # the fixture does have buckets older than the window
    assert view.publish(T0 + timedelta(minutes=1)).expired == []
    # A day later, the buckets that left the window in between are reported.
    later = T0 + timedelta(days=1)
    pub = view.publish(later)
    gone = sorted(k for k in store if first <= k.hour < window_start_hour(later))
    assert sorted(pub.expired) == gone
    # The view still publishes the same numbers as a fresh computation.
    assert stats_of(pub.stats) == stats_of(rolling_rows(store, later))


def test_a_key_whose_buckets_all_expire_publishes_zeros_then_goes() -> None:
    store = Store()
    key = store.add(BucketKey("quiet", "p", H0 - 100), n=3)
    view = RollingView(store.load)
    view.reset([key])
    assert {r.provider: r.figures.requests for r in view.publish(T0).stats} == {"p": 3, "": 3}
    later = T0 + timedelta(hours=100)
    pub = view.publish(later)
    assert pub.expired == [key]
    assert {r.provider: r.figures.requests for r in pub.stats} == {"p": 0, "": 0}
    assert view.publish(later + timedelta(hours=1)).stats == []


def test_hourly_rows_for_changed_hours_only() -> None:
    store, view = populated()
    view_note(view, store, BucketKey("a", "p1", H0 - 6))  # known, published, not dirty
    view.publish(T0)
    t = T0 + timedelta(minutes=3)
    k1 = view_note(view, store, BucketKey("a", "p2", H0 - 6))
    k2 = view_note(view, store, BucketKey("b", "p1", H0))
    pub = view.publish(t)
    hours = {(k1.model, k1.hour), (k2.model, k2.hour)}
    assert hourly_of(pub.hourly) == hourly_of(hourly_rows(store, t, hours=hours))
    assert {(r.model, r.hour) for r in pub.hourly} == {
        ("a", T0.replace(minute=0) - timedelta(hours=6)),
        ("b", T0.replace(minute=0)),
    }
    # Every provider of the hour, plus the all-providers row.
    assert {r.provider for r in pub.hourly if r.model == "a"} == {"p1", "p2", ""}
    assert view.publish(t + timedelta(seconds=1)).hourly == []


def test_hourly_rows_skip_hours_outside_the_window() -> None:
    store, view = populated()
    view.publish(T0)
    old = view_note(view, store, BucketKey("a", "p1", window_start_hour(T0) - 2))
    pub = view.publish(T0 + timedelta(minutes=1))
    assert pub.hourly == []
    assert old in pub.expired


def view_note(view: RollingView, store: Store, key: BucketKey) -> BucketKey:
    view.note(store.add(key, n=2))
    return key


def test_random_sequence_always_agrees_with_a_fresh_computation() -> None:
    """Property-style: notes in current, late and future hours, ticks and roll-overs.

    The latest row published for each key always has the figures that
    ``rolling_rows`` computes from scratch over the store (expired buckets are
    deleted from the store, as the worker does).
    """
    import random

    rng = random.Random(5)
    store = Store()
    view = RollingView(store.load)
    view.reset([])
    latest: dict[tuple[str, str], object] = {}
    t = T0
    for _ in range(400):
        r = rng.random()
        if r < 0.15:
            t += timedelta(minutes=rng.choice([1, 7, 59, 61, 60 * 30]))
        else:
            now_h = hour_of(t)
            hour = rng.choice([now_h, now_h, now_h - 1, now_h - rng.randrange(168)])
            if rng.random() < 0.02:
                hour = now_h + 1  # a gateway clock a few minutes ahead
            key = BucketKey(rng.choice("abcd"), rng.choice(["p1", "p2", "p3"]), hour)
            view.note(store.add(key, n=rng.randint(1, 4), ttft=rng.uniform(1, 9000)))
        if rng.random() < 0.5:
            continue
        pub = view.publish(t)
        for key in pub.expired:
            del store[key]
        for row in pub.stats:
            latest[(row.model, row.provider)] = row.figures
        fresh = {(r.model, r.provider): r.figures for r in rolling_rows(store, t)}
        for k, figures in fresh.items():
            assert latest[k] == figures, (k, t)
        for k in latest.keys() - fresh.keys():
            assert latest[k].requests == 0, k  # type: ignore[attr-defined]


def test_hourly_rows_are_capped_per_publication_newest_first(monkeypatch: object) -> None:
    import processors.worker.rolling_view as rv

    monkeypatch.setattr(rv, "MAX_HOURLY_PER_PUBLICATION", 50)  # type: ignore[attr-defined]
    store = Store()
    view = RollingView(store.load)
    models = [f"m{i}" for i in range(3)]
    for h in range(H0 - 100, H0 + 1):
        for m in models:
            view.note(store.add(BucketKey(m, "p", h)))
    seen: list[tuple[str, datetime]] = []
    rounds = 0
    while True:
        pub = view.publish(T0)
        pairs = {(r.model, r.hour) for r in pub.hourly}
        if not pairs:
            break
        assert len(pairs) <= 50
        if rounds == 0:  # the newest hours come first
            assert max(h for _, h in pairs) == rv.hour_start(H0)
        seen.extend(pairs)
        rounds += 1
    assert rounds == -(-(101 * 3) // 50)
    assert len(seen) == len(set(seen)) == 101 * 3  # every changed hour exactly once


def test_an_undelivered_publication_is_due_again() -> None:
    store, view = populated()
    view.publish(T0)
    t = T0 + timedelta(minutes=3)
    view_note(view, store, BucketKey("a", "p2", H0 - 6))
    view_note(view, store, BucketKey("b", "p1", H0))
    lost = view.publish(t)
    assert lost.stats and lost.hourly
    assert view.publish(t + timedelta(seconds=1)).stats == []  # published: not due
    view.again(lost)
    t2 = t + timedelta(seconds=2)
    pub = view.publish(t2)
    assert {(r.model, r.provider) for r in pub.stats} == {(r.model, r.provider) for r in lost.stats}
    assert stats_of(pub.stats) == {
        k: v for k, v in stats_of(rolling_rows(store, t2)).items() if k[0] in {"a", "b"}
    }
    assert {(r.model, r.provider, r.hour) for r in pub.hourly} == {
        (r.model, r.provider, r.hour) for r in lost.hourly
    }
    assert view.publish(t2 + timedelta(seconds=1)).hourly == []
