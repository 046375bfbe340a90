"""Mergeable quantile sketch with a relative-error guarantee (DDSketch).

Why DDSketch: TTFT and output speed are heavy-tailed. Rank-error sketches
(KLL, t-digest) keep the p95's *rank* close but its *value* can be far off in
the tail; DDSketch bounds the value's relative error for every quantile, and
merging two sketches is exact (bin counts add). We use the ``ddsketch``
package for the mapping and the stores, and add only a compact binary
encoding: sparse (key, count) varint pairs, since most hourly buckets hold few
distinct bins and the package's own encoding needs protobuf and writes dense
bins.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from itertools import chain, compress, pairwise
from operator import add
from typing import Any

import numpy as np
import numpy.typing as npt
from ddsketch import LogarithmicMapping
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore

__all__ = ["RELATIVE_ACCURACY", "QuantileSketch", "add_grouped", "encode_sketches"]

#: Half the 1% the contract allows. The exact quantile we promise is the value
#: of the event at rank floor(q * (n - 1)), 0-based (docs/queries.md shows it in SQL);
#: measured against it, alpha = 0.01 peaked at 0.996% on a pareto mix
#: (bench/sketch_compare.py), too close to the bound.
RELATIVE_ACCURACY = 0.005
_FORMAT = 1
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_CHUNK = 16
_LN2 = math.log(2)  # math.log(v, 2) is log(v) / log(2): the mapping's formula
_HEADER = struct.Struct("<BddQQ")  # format, min, max, zero_count, n_bins


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _varint(n: int) -> bytes:
    out = bytearray()
    _put_varint(out, n)
    return bytes(out)


#: Varints of the small numbers most keys' deltas and bin counts are.
_TABULATED = 1 << 14
_VARINTS = [_varint(n) for n in range(_TABULATED)]


#: Stores of at least this many values are encoded with numpy
#: (``_to_bytes_columnar``, ~20 us whatever the size); below it, the bins
#: that hold them take fewer list steps than numpy's calls (measured: even
#: at ~100 values, 70 bins).
_COLUMNAR_VALUES = 128


def _varints(values: npt.NDArray[np.uint64]) -> bytes:
    """``_varint`` of each value, concatenated, for a whole column at once.

    Each value's 7-bit groups, low first, all but its last with the high
    bit set; a row per value, as many columns as the longest needs, and the
    groups each value needs taken in row order.
    """
    top = int(values.max())
    if top < 0x80:
        return values.astype(np.uint8).tobytes()
    if top < 0x4000:  # one or two bytes each: the usual sketch
        two = values >= np.uint64(0x80)
        low = (values & np.uint64(0x7F)).astype(np.uint8)
        low[two] |= 0x80
        at = np.arange(len(values)) + np.cumsum(two) - two
        out = np.empty(len(values) + int(np.count_nonzero(two)), dtype=np.uint8)
        out[at] = low
        out[at[two] + 1] = (values[two] >> np.uint64(7)).astype(np.uint8)
        return out.tobytes()
    size = _varint_sizes(values)
    width = int(size.max())
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = ((values[:, None] >> shifts[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    column = np.arange(width)[None, :]
    groups[column < size[:, None] - 1] |= 0x80
    return groups[column < size[:, None]].tobytes()


def _varint_sizes(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """The length of ``_varint`` of each value: one byte per started 7 bits."""
    size = np.ones(len(values), dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        size += rest > 0
        rest >>= np.uint64(7)
    return size


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


class _Store(DenseStore):
    """``DenseStore`` whose merge adds the bins a slice at a time.

    Publishing merges thousands of sketches (every hour bucket of the
    window); the package adds bins one Python step each. The result is the
    same, bit for bit: the same float additions in the same order.
    """

    def merge(self, store: DenseStore) -> None:
        if store.count == 0:
            return
        if self.count == 0:
            self.copy(store)
            return
        if store.min_key < self.min_key or store.max_key > self.max_key:
            self._extend_range(store.min_key, store.max_key)
        n = store.max_key - store.min_key + 1
        lo = store.min_key - self.offset
        start = store.min_key - store.offset
        bins = self.bins
        bins[lo : lo + n] = map(add, bins[lo : lo + n], store.bins[start : start + n])
        self.count += store.count


class QuantileSketch:
    """Non-negative values only (latencies, speeds); counts are exact integers."""

    __slots__ = ("_sk",)

    def __init__(self) -> None:
        # ``DDSketch(relative_accuracy)`` with two changes that only save
        # memory (a worker holds hundreds of thousands of hour buckets): one
        # mapping shared by every sketch (it is immutable), and stores that
        # grow in chunks of 16 bins instead of 128.
        self._sk = BaseDDSketch(
            mapping=_MAPPING,
            store=_Store(chunk_size=_CHUNK),
            negative_store=_Store(chunk_size=_CHUNK),
            zero_count=0.0,
        )

    def add(self, value: float) -> None:
        self.add_many(np.array([value], dtype=np.float64))

    def add_many(self, values: npt.NDArray[np.float64]) -> None:
        """Add a column of values at once."""
        add_grouped([self], np.zeros(len(values), dtype=np.intp), values)

    def merge(self, other: QuantileSketch) -> None:
        if other.count:
            self._sk.merge(other._sk)

    @property
    def count(self) -> int:
        return int(self._sk.count)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (lower rank, rank floor(q * (n - 1))), or None when empty."""
        if not self._sk.count:
            return None
        value = self._sk.get_quantile_value(q)
        if value is None:
            return None
        # The bin's representative value may lie a hair outside [min, max].
        return float(min(max(value, self._sk._min), self._sk._max))

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """``quantile`` of each of ``qs``, summing the bins once for all of them.

        The same steps as ``get_quantile_value`` for a sketch without negative
        values (this one's), so the same values, bit for bit.
        """
        sk = self._sk
        if not sk.count:
            return [None] * len(qs)
        negative = sk._negative_store
        if negative.count or any(not 0 <= q <= 1 for q in qs):
            return [self.quantile(q) for q in qs]
        store = sk._store
        running: npt.NDArray[np.float64] | None = None
        out: list[float | None] = []
        for q in qs:
            rank = q * (sk._count - 1)
            if rank < sk._zero_count + negative.count:
                value = 0.0
            else:
                if running is None:
                    running = np.cumsum(np.asarray(store.bins, dtype=np.float64))
                i = int(
                    np.searchsorted(running, rank - sk._zero_count - negative.count, side="right")
                )
                key = i + store.offset if i < len(running) else store.max_key
                value = sk._mapping.value(key)
            out.append(float(min(max(value, sk._min), sk._max)))
        return out

    def to_bytes(self) -> bytes:
        sk = self._sk
        store = sk._store
        bins = store.bins
        if store.count >= _COLUMNAR_VALUES:
            return self._to_bytes_columnar()
        # Only the non-empty bins, found by C-level iteration (the dense store
        # spans every key between the smallest and the largest).
        keys = list(compress(range(store.offset, store.offset + len(bins)), bins))
        counts = list(map(int, filter(None, bins)))
        out = bytearray(self._header(len(keys)))
        if not keys:
            return bytes(out)
        # The first key is written against 0, the others against the previous
        # one (ascending, so the zig-zag of a delta is twice the delta).
        values = [_zigzag(keys[0]), counts[0]]
        values += [
            x
            for pair in zip([(b - a) << 1 for a, b in pairwise(keys)], counts[1:], strict=True)
            for x in pair
        ]
        table = _VARINTS
        out += b"".join([table[v] if v < _TABULATED else _varint(v) for v in values])
        return bytes(out)

    def _header(self, n_bins: int) -> bytes:
        sk = self._sk
        return _HEADER.pack(
            _FORMAT,
            sk._min if sk.count else math.inf,
            sk._max if sk.count else -math.inf,
            int(sk._zero_count),
            n_bins,
        )

    def _to_bytes_columnar(self) -> bytes:
        """``to_bytes`` with numpy, for a store of many values: the same bytes.

        Every fold that touches a bucket encodes its two sketches again, and
        a busy hour's sketches have hundreds of bins: 61 against 27 us for
        168 bins, one varint at a time against a column at a time. (Encoding
        was a fifth of a worker's time on week-wide traffic, where most
        buckets are still small and keep the other path.)
        """
        store = self._sk._store
        bins = np.asarray(store.bins, dtype=np.float64)
        present = np.flatnonzero(bins)
        header = self._header(len(present))
        if not len(present):
            return header
        keys = present.astype(np.int64) + int(store.offset)
        values = np.empty(2 * len(keys), dtype=np.uint64)
        values[0] = _zigzag(int(keys[0]))
        values[1::2] = bins[present].astype(np.uint64)  # whole counts, as ``int`` truncates
        values[2::2] = np.diff(keys).astype(np.uint64) << np.uint64(1)
        return header + _varints(values)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> QuantileSketch:
        buf = memoryview(data)
        fmt, vmin, vmax, zero, n_bins = _HEADER.unpack_from(buf, 0)
        if fmt != _FORMAT:
            raise ValueError(f"unknown sketch format {fmt}")
        self = cls()
        sk = self._sk
        pos = _HEADER.size
        key = 0
        keys: list[int] = []
        counts: list[int] = []
        for _ in range(n_bins):
            delta, pos = _get_varint(buf, pos)
            count, pos = _get_varint(buf, pos)
            key += _unzigzag(delta)
            keys.append(key)
            counts.append(count)
        total = float(zero)
        if keys:
            store = sk._store
            store._extend_range(keys[0], keys[-1])  # size the bins once, not per key
            bins, offset = store.bins, store.offset
            for k, c in zip(keys, counts, strict=True):
                bins[k - offset] += c
            store.count = float(sum(counts))
            total += store.count
        sk._zero_count = float(zero)
        sk._count = total
        if total:
            sk._min, sk._max = vmin, vmax
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantileSketch) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:  # mutable: identity hash like any mutable object
        return id(self)


def _keys(mapping: Any, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The package's key (``LogarithmicMapping.key``) of each value, in one pass.

    The ceiling of ``log(v) / log(2) * multiplier``, plus the offset, in the
    package's order of operations; ``tests/unit/aggregate/test_columns.py``
    checks it against the package key by key over every magnitude.
    """
    keys = np.ceil(np.log(values) / _LN2 * mapping._multiplier).astype(np.int64)
    keys += int(mapping._offset)
    return keys


def add_grouped(
    sketches: Sequence[QuantileSketch],
    group: npt.NDArray[np.intp],
    values: npt.NDArray[np.float64],
) -> None:
    """Add ``values[i]`` to ``sketches[group[i]]``, for a whole column at once.

    The keys of every value come from one array operation, and the (sketch,
    key) pairs are counted with one sort, so the Python work is one step
    per distinct pair rather than per value. Values at or below the
    mapping's smallest distinguishable value count as zeros, as in
    ``DDSketch.add``.
    """
    n = len(values)
    if not n:
        return
    mapping = sketches[0]._sk._mapping
    order = np.argsort(group, kind="stable")
    g = group[order]
    v = values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    present = g[starts].tolist()
    sizes = np.diff(np.r_[starts, n]).tolist()
    lows = np.minimum.reduceat(v, starts).tolist()
    highs = np.maximum.reduceat(v, starts).tolist()
    totals = np.add.reduceat(v, starts).tolist()
    positive = v > mapping.min_possible
    zeros = np.bincount(g[~positive], minlength=len(sketches)).tolist()
    pg = g[positive]
    keys = _keys(mapping, v[positive])
    # Sorted by group already (stable); sort keys within each group.
    pair_order = np.lexsort((keys, pg))
    pg, keys = pg[pair_order], keys[pair_order]
    m = len(keys)
    if m:
        new = np.r_[True, (pg[1:] != pg[:-1]) | (keys[1:] != keys[:-1])]
        pair_starts = np.flatnonzero(new)
        pair_groups = pg[pair_starts].tolist()
        pair_keys = keys[pair_starts].tolist()
        pair_counts = np.diff(np.r_[pair_starts, m]).tolist()
    else:
        pair_groups, pair_keys, pair_counts = [], [], []
    p = 0
    n_pairs = len(pair_groups)
    for j, gi in enumerate(present):
        sk = sketches[gi]._sk
        q = p
        while q < n_pairs and pair_groups[q] == gi:
            q += 1
        if q > p:
            store = sk._store
            store._extend_range(pair_keys[p], pair_keys[q - 1])
            bins, offset = store.bins, store.offset
            added = 0
            for k in range(p, q):
                bins[pair_keys[k] - offset] += pair_counts[k]
                added += pair_counts[k]
            store.count += added
            p = q
        sk._zero_count += zeros[gi]
        sk._count += sizes[j]
        sk._sum += totals[j]
        if lows[j] < sk._min:
            sk._min = lows[j]
        if highs[j] > sk._max:
            sk._max = highs[j]


def encode_sketches(sketches: Sequence[QuantileSketch]) -> list[bytes]:
    """``to_bytes`` of each sketch, the bins of all of them in one numpy pass: the same bytes.

    A worker's batch writes back every bucket it touched, two sketches
    each, and most of them hold a few values spread over a dense run of
    bins; encoding them one at a time was a sixth of a week-wide worker's
    time. Here every store's bins become one array, and finding the
    non-empty bins, their keys, the deltas and the varints are each one
    array operation for the whole batch; the Python work left per sketch
    is its header and a slice. ``tests/unit/aggregate/test_sketch_bytes.py``
    compares it with ``to_bytes`` sketch for sketch.
    """
    n = len(sketches)
    if not n:
        return []
    stores = [q._sk._store for q in sketches]
    lists = [st.bins for st in stores]
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n)
    bins = np.fromiter(chain.from_iterable(lists), dtype=np.float64, count=int(lengths.sum()))
    present = np.flatnonzero(bins)
    ends = np.cumsum(lengths)
    owner = np.searchsorted(ends, present, side="right")  # the sketch of each non-empty bin
    offsets = np.fromiter((st.offset for st in stores), dtype=np.int64, count=n)
    keys = present - (ends - lengths)[owner] + offsets[owner]
    n_bins = np.bincount(owner, minlength=n)
    m = len(present)
    values = np.empty(2 * m, dtype=np.uint64)
    values[1::2] = bins[present].astype(np.uint64)  # whole counts, as ``int`` truncates
    if m:
        # Each sketch's first key against 0 (zig-zag), the others against the
        # previous one (ascending within a sketch: twice the delta).
        first = np.ones(m, dtype=bool)
        first[1:] = owner[1:] != owner[:-1]
        deltas = np.empty(m, dtype=np.int64)
        deltas[0] = 0
        deltas[1:] = np.diff(keys)
        pairs = deltas.astype(np.uint64) << np.uint64(1)
        head_keys = keys[first]
        pairs[first] = ((head_keys << 1) ^ (head_keys >> 63)).astype(np.uint64)
        values[0::2] = pairs
        body = _varints(values)
        cum = np.zeros(2 * m + 1, dtype=np.int64)
        np.cumsum(_varint_sizes(values), out=cum[1:])
    else:
        body = b""
        cum = np.zeros(1, dtype=np.int64)
    pair_end = np.cumsum(n_bins)
    byte_end = cum[2 * pair_end].tolist()
    byte_start = cum[2 * (pair_end - n_bins)].tolist()
    return [
        q._header(k) + body[lo:hi]
        for q, k, lo, hi in zip(sketches, n_bins.tolist(), byte_start, byte_end, strict=True)
    ]
