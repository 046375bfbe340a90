"""The columnar add counts exactly what the rules say, key for key like the package.

The reference here is written out event by event with ddsketch's own
``DDSketch.add``; the columnar path must produce the same bytes.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from package_sketch import package_bytes, package_sketch

from processors.aggregate import HourBucket, QuantileSketch
from processors.aggregate.columns import BucketInputs
from schemas.event import ERROR_TYPES, EXCLUDED_FROM_ERROR_RATE, MAX_DURATION_MS


def _reference(rows: list[tuple]) -> HourBucket:
    b = HourBucket()
    ttft, tps = package_sketch(), package_sketch()
    for status, error_type, ttft_ms, latency, tin, tout in rows:
        b.requests += 1
        b.input_tokens += tin
        b.output_tokens += tout
        if error_type not in EXCLUDED_FROM_ERROR_RATE:
            b.error_denominator += 1
            if status == "error":
                b.errors += 1
        if status == "ok" and ttft_ms is not None:
            ttft.add(ttft_ms)
            if tout >= 2 and latency > ttft_ms:
                seconds = (latency - ttft_ms) / 1000.0
                tps.add(tout / seconds)
    b.ttft = QuantileSketch.from_bytes(package_bytes(ttft))
    b.output_tps = QuantileSketch.from_bytes(package_bytes(tps))
    return b


def _rows(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        failed = rng.random() < 0.2
        status = "error" if failed else "ok"
        error_type = rng.choice(ERROR_TYPES) if failed else None
        magnitude = rng.choice([1e-3, 1.0, 1e3, 1e5, MAX_DURATION_MS / 2])
        ttft = None if rng.random() < 0.1 else round(rng.random() * magnitude, 3)
        latency = round((ttft or 0.0) + rng.choice([0.0, 0.001, rng.random() * magnitude]), 3)
        tout = rng.choice([0, 1, 2, 3, 500, 100_000_000])
        out.append((status, error_type, ttft, latency, rng.randint(0, 10_000), tout))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_columns_count_what_the_event_rules_count(seed: int) -> None:
    rows = _rows(3_000, seed)
    got = HourBucket()
    got.add_columns(BucketInputs.from_values(*map(list, zip(*rows, strict=True))))
    want = _reference(rows)
    assert got.to_bytes() == want.to_bytes()
    assert got.figures() == want.figures()


def test_one_event_at_a_time_equals_the_whole_column() -> None:
    rows = _rows(500, 42)
    one = HourBucket()
    for r in rows:
        one.add_values(*r)
    whole = HourBucket()
    whole.add_columns(BucketInputs.from_values(*map(list, zip(*rows, strict=True))))
    assert one.to_bytes() == whole.to_bytes()


def test_sketch_keys_match_the_package_over_every_magnitude() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            10.0 ** rng.uniform(-300, 300, 200_000),
            rng.lognormal(6.5, 1.0, 200_000),
            np.array([0.0, 5e-324, 1e-308, 1.0, 2.0, 1e308]),
        ]
    )
    bulk = QuantileSketch()
    bulk.add_many(values)
    one = package_sketch(values.tolist())
    assert bulk.to_bytes() == package_bytes(one)
    assert bulk.count == len(values)


def test_an_empty_column_changes_nothing() -> None:
    b = HourBucket()
    b.add_columns(BucketInputs.from_values([], [], [], [], [], []))
    assert b.to_bytes() == HourBucket().to_bytes()


def test_many_buckets_at_once_equal_each_bucket_alone() -> None:
    rows = _rows(4_000, 11)
    rng = random.Random(3)
    group = [rng.randrange(7) for _ in rows]
    buckets = [HourBucket() for _ in range(7)]
    # One bucket already holds data: grouped adds extend what is there.
    buckets[2].add_values("ok", None, 5.0, 9.0, 1, 4)
    HourBucket.add_groups(
        buckets,
        np.asarray(group, dtype=np.intp),
        BucketInputs.from_values(*map(list, zip(*rows, strict=True))),
    )
    for b in range(7):
        mine = [r for r, g in zip(rows, group, strict=True) if g == b]
        want = _reference([("ok", None, 5.0, 9.0, 1, 4)] if b == 2 else [])
        want.merge(_reference(mine))
        assert buckets[b].to_bytes() == want.to_bytes(), b
