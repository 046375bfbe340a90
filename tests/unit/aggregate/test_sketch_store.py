"""The sketch's store merges and ranks exactly as the ``ddsketch`` package's own store.

``processors.aggregate.sketch._Store`` adds bins a slice at a time instead of
one per step, and ``QuantileSketch.quantiles`` sums the bins once for several
quantiles; the published figures depend on every bin, so both must agree bit
for bit with the package on random sketches of every shape.
"""

from __future__ import annotations

import random
from dataclasses import astuple

import numpy as np
import pytest
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore

from processors.aggregate import HourBucket
from processors.aggregate.sketch import _CHUNK, _MAPPING, QuantileSketch


def _values(rng: random.Random) -> np.ndarray:
    n = rng.choice([0, 1, 2, 7, 300])
    scale = rng.choice([0.5, 40.0, 3000.0])
    vals = [0.0 if rng.random() < 0.05 else rng.paretovariate(1.5) * scale for _ in range(n)]
    return np.asarray(vals, dtype=np.float64)


def _plain(values: np.ndarray) -> BaseDDSketch:
    sk = BaseDDSketch(
        mapping=_MAPPING,
        store=DenseStore(chunk_size=_CHUNK),
        negative_store=DenseStore(chunk_size=_CHUNK),
        zero_count=0.0,
    )
    for v in values:
        sk.add(float(v))
    return sk


def _ours(values: np.ndarray) -> QuantileSketch:
    sk = QuantileSketch()
    for v in values:
        sk.add(float(v))
    return sk


@pytest.mark.parametrize("seed", range(30))
def test_merged_sketches_have_the_packages_bins_and_quantiles(seed: int) -> None:
    rng = random.Random(seed)
    parts = [_values(rng) for _ in range(rng.randint(1, 6))]
    plain, ours = _plain(parts[0]), _ours(parts[0])
    for values in parts[1:]:
        plain.merge(_plain(values))
        ours.merge(_ours(values))
    store = ours._sk._store
    if plain.count:
        first = store.min_key - store.offset
        want = plain._store.bins[plain._store.min_key - plain._store.offset :][
            : plain._store.max_key - plain._store.min_key + 1
        ]
        got = store.bins[first : first + store.max_key - store.min_key + 1]
        assert got == want
        assert (store.min_key, store.max_key, store.count) == (
            plain._store.min_key,
            plain._store.max_key,
            plain._store.count,
        )
    for q in (0.0, 0.01, 0.5, 0.95, 0.99, 1.0):
        assert ours._sk.get_quantile_value(q) == plain.get_quantile_value(q), q


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
    qs = (0.0, 0.25, 0.5, 0.95, 0.99, 1.0)
    assert sk.quantiles(qs) == [sk.quantile(q) for q in qs]
