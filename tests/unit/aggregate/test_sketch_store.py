"""The sketch holds the ``ddsketch`` package's bins, totals and quantiles, bit for bit.

``QuantileSketch`` keeps its bins as numpy arrays and adds a whole column,
or merges many sketches, at once (``add_grouped``, ``merge``, ``merged``);
the published figures depend on every bin, so on random data of every shape
(empty, zeros only, values under 1, one bin, hundreds) each result must be
what the package gets adding the same values one at a time.
"""

from __future__ import annotations

import random
from dataclasses import astuple

import numpy as np
import pytest
from package_sketch import package_bins, package_bytes, package_quantile, package_sketch

from processors.aggregate import HourBucket
from processors.aggregate.sketch import QuantileSketch, add_grouped, group_order

_QS = (0.0, 0.01, 0.25, 0.5, 0.95, 0.99, 1.0)


def _values(rng: random.Random) -> np.ndarray:
    n = rng.choice([0, 1, 2, 7, 300])
    scale = rng.choice([0.5, 40.0, 3000.0])
    vals = [0.0 if rng.random() < 0.05 else rng.paretovariate(1.5) * scale for _ in range(n)]
    return np.asarray(vals, dtype=np.float64)


def _ours(values: np.ndarray) -> QuantileSketch:
    sk = QuantileSketch()
    sk.add_many(values)
    return sk


def _assert_same(ours: QuantileSketch, plain: object) -> None:
    assert list(zip(ours._keys.tolist(), ours._counts.tolist(), strict=True)) == package_bins(
        plain  # type: ignore[arg-type]
    )
    assert ours.count == plain.count  # type: ignore[attr-defined]
    assert ours.to_bytes() == package_bytes(plain)  # type: ignore[arg-type]
    assert ours.quantiles(_QS) == [package_quantile(plain, q) for q in _QS]  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(40))
def test_merged_sketches_have_the_packages_bins_and_quantiles(seed: int) -> None:
    rng = random.Random(seed)
    parts = [_values(rng) for _ in range(rng.randint(1, 6))]
    plain = package_sketch(parts[0])
    ours = _ours(parts[0])
    for values in parts[1:]:
        plain.merge(package_sketch(values))
        ours.merge(_ours(values))
    _assert_same(ours, plain)
    _assert_same(QuantileSketch.merged([_ours(v) for v in parts]), plain)


@pytest.mark.parametrize("seed", range(40))
def test_columns_added_to_many_sketches_at_once_are_each_added_alone(seed: int) -> None:
    """``add_grouped`` over sketches that already hold bins: new keys, existing keys, none."""
    rng = random.Random(1000 + seed)
    n = rng.randint(1, 8)
    before = [_values(rng) for _ in range(n)]
    sketches = [_ours(v) for v in before]
    plains = [package_sketch(v) for v in before]
    for _ in range(rng.randint(1, 3)):
        column = [(rng.randrange(n), v) for v in _values(rng).tolist() for _ in range(2)]
        if not column:
            continue
        group = np.asarray([g for g, _ in column], dtype=np.intp)
        add_grouped(sketches, group, np.asarray([v for _, v in column], dtype=np.float64))
        for g, v in column:
            plains[g].add(v)
    for ours, plain in zip(sketches, plains, strict=True):
        _assert_same(ours, plain)


@pytest.mark.parametrize("seed", range(20))
def test_values_added_one_at_a_time_give_the_packages_sketch(seed: int) -> None:
    values = _values(random.Random(2000 + seed))
    ours = QuantileSketch()
    for v in values.tolist():
        ours.add(v)
    _assert_same(ours, package_sketch(values))


def test_a_merge_never_changes_the_merged_sketch() -> None:
    """A merge into an empty sketch shares the other's bins; adding later must not reach them."""
    source = _ours(np.asarray([1.0, 2.0, 3.0]))
    want = source.to_bytes()
    copy = QuantileSketch()
    copy.merge(source)
    copy.add_many(np.asarray([2.0, 50.0]))
    alone = QuantileSketch.merged([source])
    alone.add(2.0)
    assert source.to_bytes() == want
    assert copy.count == 5 and alone.count == 4


def test_figures_values_are_the_dataclass_fields_in_order() -> None:
    bucket = HourBucket()
    bucket.requests = 3
    bucket.ttft.add(12.5)
    figures = bucket.figures()
    assert figures.values() == astuple(figures)


@pytest.mark.parametrize("seed", range(30))
def test_quantiles_at_once_are_each_quantile(seed: int) -> None:
    rng = random.Random(100 + seed)
    sk = _ours(_values(rng))
    qs = (0.0, 0.25, 0.5, 0.95, 0.99, 1.0, 1.5, -0.1)
    assert sk.quantiles(qs) == [sk.quantile(q) for q in qs]


@pytest.mark.parametrize("groups", [1, 7, 65_536, 65_537, 1_000_000])
def test_group_order_is_the_stable_argsort(groups: int) -> None:
    """The radix-sorted order (16-bit group numbers) and the wide fallback alike."""
    rng = np.random.default_rng(groups)
    group = rng.integers(0, groups, 20_000).astype(np.intp)
    group[:3] = groups - 1  # the largest number is kept whole, not wrapped
    assert np.array_equal(group_order(group, groups), np.argsort(group, kind="stable"))
