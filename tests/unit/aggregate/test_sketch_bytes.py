"""A sketch's bytes are the same whichever encoder writes them.

``QuantileSketch.to_bytes`` encodes a sketch of many bins with numpy
(varints for a whole column, ``encode_sketches``) and a small one a varint
at a time, and ``from_bytes`` reads them back either way; stored buckets
and changelog messages hold these bytes, so every way must write exactly
the package's sketch in our format (``tests/package_sketch.py``), for every
shape: empty, zeros only, keys below zero (values under 1), one bin,
hundreds, counts and key gaps past one and two varint bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
from package_sketch import package_bytes, package_sketch

from processors.aggregate.sketch import QuantileSketch, _varint, _varints, encode_sketches


def _random_sketch(rng: np.random.Generator, seed: int) -> QuantileSketch:
    sketch = QuantileSketch()
    n = int(rng.choice([0, 1, 5, 150, 600]))
    scale = float(rng.choice([0.001, 0.5, 40.0, 3000.0, 1e7]))
    sketch.add_many(rng.pareto(1.2, n) * scale)
    if seed % 5 == 0:
        for _ in range(3):
            sketch.add(0.0)
    if seed % 7 == 0:  # one bin with a count past two varint bytes
        sketch.add_many(np.full(20_000, 12.5))
    return sketch


def _one_at_a_time(sketch: QuantileSketch) -> bytes:
    """The varint-at-a-time encoding, whatever the sketch's size."""
    import processors.aggregate.sketch as module

    saved = module._COLUMNAR_BINS
    module._COLUMNAR_BINS = 1 << 62
    try:
        return sketch.to_bytes()
    finally:
        module._COLUMNAR_BINS = saved


def _decoded_one_at_a_time(data: bytes) -> QuantileSketch:
    import processors.aggregate.sketch as module

    saved = module._COLUMNAR_BINS
    module._COLUMNAR_BINS = 1 << 62
    try:
        return QuantileSketch.from_bytes(data)
    finally:
        module._COLUMNAR_BINS = saved


@pytest.mark.parametrize("seed", range(200))
def test_both_encoders_write_the_same_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    plain = package_sketch()
    n = int(rng.choice([0, 1, 5, 150, 600]))
    scale = float(rng.choice([0.001, 0.5, 40.0, 3000.0, 1e7]))
    values = (rng.pareto(1.2, n) * scale).tolist()
    if seed % 5 == 0:
        values += [0.0] * 3
    if seed % 7 == 0:  # one bin with a count past two varint bytes
        values += [12.5] * 20_000
    for v in values:
        plain.add(v)
    sketch = QuantileSketch()
    sketch.add_many(np.asarray(values, dtype=np.float64))
    want = package_bytes(plain)
    assert _one_at_a_time(sketch) == want
    assert encode_sketches([sketch]) == [want]
    assert sketch.to_bytes() == want
    # Both decoders read it back to the same sketch.
    for decoded in (QuantileSketch.from_bytes(want), _decoded_one_at_a_time(want)):
        assert decoded.to_bytes() == want
        assert decoded.count == sketch.count
        assert decoded.quantiles((0.0, 0.5, 0.95, 1.0)) == sketch.quantiles((0.0, 0.5, 0.95, 1.0))


def test_a_truncated_sketch_is_refused() -> None:
    sketch = QuantileSketch()
    sketch.add_many(np.arange(1.0, 400.0))
    data = sketch.to_bytes()
    with pytest.raises(ValueError, match="cut short"):
        QuantileSketch.from_bytes(data[: len(data) - 30])


@pytest.mark.parametrize("top", [1, 0x7F, 0x80, 0x3FFF, 0x4000, 2**35, 2**63])
def test_varints_of_a_column_are_each_varint(top: int) -> None:
    rng = np.random.default_rng(top % 1000)
    values = rng.integers(0, top, 500, dtype=np.uint64, endpoint=True)
    values[0] = top
    assert _varints(values) == b"".join(_varint(int(v)) for v in values)


@pytest.mark.parametrize("seed", range(60))
def test_a_batch_of_sketches_encodes_as_each_one_alone(seed: int) -> None:
    """``encode_sketches`` (all the bins in one pass) against ``to_bytes``, sketch for sketch."""
    rng = np.random.default_rng(seed)
    sketches = [
        _random_sketch(rng, int(rng.integers(0, 35))) for _ in range(int(rng.integers(0, 40)))
    ]
    if seed % 3 == 0:
        sketches.append(QuantileSketch())  # empty ones, first and last too
        sketches.insert(0, QuantileSketch())
    want = [s.to_bytes() for s in sketches]
    assert encode_sketches(sketches) == want
    assert [QuantileSketch.from_bytes(b).to_bytes() for b in want] == want
