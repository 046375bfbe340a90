"""The ``ddsketch`` package's own sketch, as the reference our sketch must equal.

``processors.aggregate.sketch`` keeps its bins in numpy arrays and adds and
merges many sketches at once; the package adds one value at a time to a
dense list. Tests build the same data both ways and compare: the bins (the
package's non-empty ones), the totals, the quantiles, and the bytes (the
package's sketch written in our stored format, the plain way, here).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore

from processors.aggregate.sketch import _MAPPING

_HEADER = struct.Struct("<BddQQ")


def package_sketch(values: Iterable[float] = ()) -> BaseDDSketch:
    """``DDSketch(0.005)`` with our mapping, each value added by the package."""
    sk = BaseDDSketch(
        mapping=_MAPPING, store=DenseStore(), negative_store=DenseStore(), zero_count=0.0
    )
    for v in values:
        sk.add(float(v))
    return sk


def package_bins(sk: BaseDDSketch) -> list[tuple[int, int]]:
    """The (key, count) of every non-empty bin, ascending."""
    store = sk._store
    return [(i + store.offset, int(c)) for i, c in enumerate(store.bins) if c]


def package_quantile(sk: BaseDDSketch, q: float) -> float | None:
    """The package's quantile, clamped to [min, max] as ``QuantileSketch.quantile`` promises."""
    value = sk.get_quantile_value(q)
    if value is None:
        return None
    return float(min(max(value, sk._min), sk._max))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def package_bytes(sk: BaseDDSketch) -> bytes:
    """The package's sketch in our stored format (docs/architecture.md), a pair at a time."""
    bins = package_bins(sk)
    out = _HEADER.pack(
        1,
        sk._min if sk.count else math.inf,
        sk._max if sk.count else -math.inf,
        int(sk._zero_count),
        len(bins),
    )
    previous = 0
    for i, (key, count) in enumerate(bins):
        delta = key - previous
        out += _varint((delta << 1) ^ (delta >> 63) if i == 0 else delta << 1) + _varint(count)
        previous = key
    return out
