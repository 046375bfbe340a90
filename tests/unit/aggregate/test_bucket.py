"""HourBucket: exact counts, exact merges, stable bytes; the window's edges; expiry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processors.aggregate import (
    ALL_PROVIDERS,
    WINDOW_HOURS,
    BucketKey,
    HourBucket,
    QuantileSketch,
    hour_of,
    hour_start,
    in_window,
    rolling_rows,
    window_start,
)
from schemas.codec import validate_event
from schemas.event import ERROR_TYPES, RequestEvent

AS_OF = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)


@pytest.fixture
def events(event_factory: Any) -> list[RequestEvent]:
    """A varied, seeded set of events in one hour."""
    rng = random.Random(7)
    out = []
    for i in range(600):
        ok = rng.random() < 0.85
        latency = rng.lognormvariate(7.5, 1.0)
        ttft = None if rng.random() < 0.05 else latency * rng.random()
        if i % 50 == 0:
            ttft = 0.0
        if i % 37 == 0 and ttft is not None:
            ttft = latency
        out.append(
            validate_event(
                event_factory(
                    ts=(AS_OF - timedelta(minutes=10)).isoformat(),
                    status="ok" if ok else "error",
                    error_type=None if ok else rng.choice(ERROR_TYPES),
                    ttft_ms=ttft,
                    latency_ms=latency,
                    input_tokens=rng.randint(0, 4000),
                    output_tokens=rng.choice([0, 1, 2, rng.randint(3, 2000)]),
                    cached_input_tokens=0,
                ),
                now=AS_OF,
            )
        )
    return out


def bucket_of(events: list[RequestEvent]) -> HourBucket:
    b = HourBucket()
    for ev in events:
        b.add(ev)
    return b


def test_round_trip_bytes_and_figures(events: list[RequestEvent]) -> None:
    b = bucket_of(events)
    raw = b.to_bytes()
    back = HourBucket.from_bytes(raw)
    assert back.to_bytes() == raw
    assert back.figures() == b.figures()
    # Twice over, and through a memoryview/bytearray source.
    assert HourBucket.from_bytes(bytes(bytearray(raw))).to_bytes() == raw


def test_empty_bucket_round_trip_and_figures() -> None:
    b = HourBucket()
    back = HourBucket.from_bytes(b.to_bytes())
    assert back.to_bytes() == b.to_bytes()
    f = back.figures()
    assert (f.requests, f.errors, f.error_denominator, f.traffic_tokens) == (0, 0, 0, 0)
    assert f.error_rate is None
    assert f.ttft_samples == 0 and f.output_tps_samples == 0
    assert f.ttft_p50_ms is None and f.ttft_p95_ms is None and f.ttft_p99_ms is None
    assert f.output_tps_p50 is None


def test_only_excluded_errors_give_a_null_rate(event_factory: Any) -> None:
    b = HourBucket()
    for t in ("client_error", "cancelled"):
        b.add(validate_event(event_factory(status="error", error_type=t, ttft_ms=None)))
    f = b.figures()
    assert f.requests == 2
    assert f.errors == 0 and f.error_denominator == 0 and f.error_rate is None
    assert f.ttft_samples == 0 and f.ttft_p50_ms is None


def test_merge_equals_adding_everything_to_one_bucket(events: list[RequestEvent]) -> None:
    whole = bucket_of(events)
    parts = [bucket_of(events[i::7]) for i in range(7)]
    merged = HourBucket()
    for p in parts:
        merged.merge(p)
    assert merged.to_bytes() == whole.to_bytes()
    assert merged.figures() == whole.figures()
    # Merging into a non-empty bucket, in another order, through bytes.
    merged2 = HourBucket.from_bytes(parts[3].to_bytes())
    for p in reversed(parts[:3] + parts[4:]):
        merged2.merge(HourBucket.from_bytes(p.to_bytes()))
    assert merged2.to_bytes() == whole.to_bytes()
    # Merging never changes the source.
    before = parts[0].to_bytes()
    HourBucket().merge(parts[0])
    assert parts[0].to_bytes() == before


def test_merge_of_empty_is_a_no_op(events: list[RequestEvent]) -> None:
    b = bucket_of(events)
    raw = b.to_bytes()
    b.merge(HourBucket())
    assert b.to_bytes() == raw


def test_counts_follow_the_contract(events: list[RequestEvent]) -> None:
    f = bucket_of(events).figures()
    excluded = {"client_error", "cancelled"}
    assert f.requests == len(events)
    assert f.input_tokens == sum(e.input_tokens for e in events)
    assert f.output_tokens == sum(e.output_tokens for e in events)
    assert f.traffic_tokens == f.input_tokens + f.output_tokens
    assert f.errors == sum(e.status == "error" and e.error_type not in excluded for e in events)
    assert f.error_denominator == sum(e.error_type not in excluded for e in events)
    assert f.error_rate == f.errors / f.error_denominator
    ttft = [e for e in events if e.status == "ok" and e.ttft_ms is not None]
    assert f.ttft_samples == len(ttft)
    assert f.output_tps_samples == sum(
        e.output_tokens >= 2 and e.latency_ms > e.ttft_ms  # type: ignore[operator]
        for e in ttft
    )


def test_zero_ttft_values(event_factory: Any) -> None:
    b = HourBucket()
    for _ in range(10):
        b.add(validate_event(event_factory(ttft_ms=0.0, latency_ms=100.0, output_tokens=10)))
    b.add(validate_event(event_factory(ttft_ms=0, latency_ms=0, output_tokens=10)))
    f = b.figures()
    assert f.ttft_samples == 11
    assert f.ttft_p50_ms == 0.0 and f.ttft_p95_ms == 0.0 and f.ttft_p99_ms == 0.0
    # latency == ttft == 0: no speed sample (no division by zero).
    assert f.output_tps_samples == 10
    assert f.output_tps_p50 == pytest.approx(100.0, rel=0.005)
    back = HourBucket.from_bytes(b.to_bytes())
    assert back.figures() == f
    assert back.to_bytes() == b.to_bytes()


def test_sketch_with_zeros_and_values_round_trips() -> None:
    s = QuantileSketch()
    for v in [0.0, 0.0, 1e-12, 5.0, 1e6]:
        s.add(v)
    back = QuantileSketch.from_bytes(s.to_bytes())
    assert back == s
    assert back.count == 5
    qs = (0, 0.25, 0.5, 0.75, 1)
    assert [back.quantile(q) for q in qs] == [s.quantile(q) for q in qs]
    assert back.quantile(0) == 0.0
    assert back.quantile(1.0) == pytest.approx(1e6, rel=0.005)


# ------------------------------------------------------------------ the window


def one_bucket(hour: int, n: int = 3) -> HourBucket:
    b = HourBucket()
    for _ in range(n):
        b.add_values("ok", None, 100.0, 1000.0, 10, 20)
    return b


def test_window_is_168_hours_167_back_from_the_hour_of_as_of() -> None:
    h = hour_of(AS_OF)
    assert WINDOW_HOURS == 168
    assert window_start(AS_OF) == hour_start(h - 167) == datetime(2026, 3, 1, 13, tzinfo=UTC)
    assert in_window(h - 167, AS_OF)
    assert not in_window(h - 168, AS_OF)
    assert in_window(h, AS_OF)
    buckets = {
        BucketKey("m", "p", h - 167): one_bucket(h - 167, 1),
        BucketKey("m", "p", h - 168): one_bucket(h - 168, 10),
        BucketKey("m", "p", h): one_bucket(h, 100),
    }
    rows = {r.provider: r for r in rolling_rows(buckets, AS_OF)}
    assert rows["p"].figures.requests == 101
    assert rows[ALL_PROVIDERS].figures.requests == 101
    assert rows["p"].window_start == window_start(AS_OF)
    assert rows["p"].as_of == AS_OF


def test_as_of_at_an_exact_hour_boundary() -> None:
    as_of = datetime(2026, 3, 8, 12, 0, 0, tzinfo=UTC)
    h = hour_of(as_of)
    assert hour_start(h) == as_of
    assert hour_of(as_of - timedelta(milliseconds=1)) == h - 1
    assert window_start(as_of) == as_of - timedelta(hours=167)
    assert in_window(h - 167, as_of) and not in_window(h - 168, as_of)
    # One millisecond earlier, the window starts an hour earlier.
    earlier = as_of - timedelta(milliseconds=1)
    assert window_start(earlier) == as_of - timedelta(hours=168)
    assert in_window(h - 168, earlier)
    assert not in_window(h - 169, earlier)


def test_rows_per_provider_and_per_model() -> None:
    h = hour_of(AS_OF)
    buckets = {
        BucketKey("m1", "a", h): one_bucket(h, 2),
        BucketKey("m1", "b", h - 5): one_bucket(h, 3),
        BucketKey("m2", "a", h - 1): one_bucket(h, 4),
    }
    rows = {(r.model, r.provider): r.figures.requests for r in rolling_rows(buckets, AS_OF)}
    assert rows == {("m1", "a"): 2, ("m1", "b"): 3, ("m1", ""): 5, ("m2", "a"): 4, ("m2", ""): 4}
    # Iterable of pairs works like a mapping.
    assert [r.as_tuple() for r in rolling_rows(list(buckets.items()), AS_OF)] == [
        r.as_tuple() for r in rolling_rows(buckets, AS_OF)
    ]


def test_key_with_only_expired_buckets_gets_a_zero_row() -> None:
    h = hour_of(AS_OF)
    old = {BucketKey("m", "p", h - 200): one_bucket(h - 200, 5)}
    rows = {(r.model, r.provider): r.figures for r in rolling_rows(old, AS_OF)}
    assert set(rows) == {("m", "p"), ("m", "")}
    assert all(f.requests == 0 and f.error_rate is None for f in rows.values())


def test_expired_key_passed_in_keys_gets_a_zero_row() -> None:
    """A pair published before whose buckets have all been dropped shows zeros."""
    h = hour_of(AS_OF)
    live = {BucketKey("live", "p", h): one_bucket(h, 5)}
    rows = rolling_rows(live, AS_OF, keys=[("gone", "p1"), ("gone", ALL_PROVIDERS), ("live", "p")])
    by_key = {(r.model, r.provider): r.figures for r in rows}
    assert set(by_key) == {("live", "p"), ("live", ""), ("gone", "p1"), ("gone", "")}
    assert by_key[("gone", "p1")].requests == 0
    assert by_key[("gone", "")].requests == 0
    assert by_key[("gone", "p1")].ttft_p50_ms is None
    assert by_key[("live", "p")].requests == 5
    # A model-only key adds no provider row.
    rows = rolling_rows({}, AS_OF, keys=[("solo", ALL_PROVIDERS)])
    assert [(r.model, r.provider, r.figures.requests) for r in rows] == [("solo", "", 0)]


def test_buckets_encoded_together_are_each_bucket_s_bytes(events: list[RequestEvent]) -> None:
    """``HourBucket.encode_many`` and ``BucketRecord.encode_many`` against one at a time."""
    from processors.worker.records import BucketRecord

    rng = random.Random(3)
    buckets = [HourBucket() for _ in range(12)]  # some stay empty
    for ev in events:
        buckets[rng.randrange(8)].add(ev)
    assert HourBucket.encode_many(buckets) == [b.to_bytes() for b in buckets]
    records = [BucketRecord(b, {rng.randrange(4): rng.randrange(10**6)}) for b in buckets]
    assert BucketRecord.encode_many(records) == [r.to_bytes() for r in records]
    assert HourBucket.encode_many([]) == []
