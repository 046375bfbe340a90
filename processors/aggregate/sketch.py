"""Mergeable quantile sketch with a relative-error guarantee (DDSketch).

Why DDSketch: TTFT and output speed are heavy-tailed. Rank-error sketches
(KLL, t-digest) keep the p95's *rank* close but its *value* can be far off in
the tail; DDSketch bounds the value's relative error for every quantile, and
merging two sketches is exact (bin counts add).

The ``ddsketch`` package gives the mapping from values to bin keys and back
(``LogarithmicMapping``); the bins are ours. The package keeps them in a
dense Python list of floats, one list step per added value or merged bin,
and about a kilobyte of objects per sketch. A worker holds hundreds of
thousands of hourly sketches and adds whole columns of values at a time, so
here a sketch's bins are two numpy arrays, the keys that hold a value
(ascending) and their whole counts, and the adds and merges of many sketches
are done together (``add_grouped``, ``merged``, ``encode_sketches``).
The bins, counts and quantiles are the package's, bit for bit
(``tests/unit/aggregate/test_sketch_store.py`` compares them with the
package's own sketch on random data).

Stored and sent, a sketch is sparse (key, count) varint pairs: most hourly
buckets hold few distinct bins, and the package's own encoding needs
protobuf and writes dense bins.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from ddsketch import LogarithmicMapping

__all__ = [
    "RELATIVE_ACCURACY",
    "QuantileSketch",
    "add_grouped",
    "encode_sketches",
    "group_order",
]

#: Half the 1% the contract allows. The exact quantile we promise is the value
#: of the event at rank floor(q * (n - 1)), 0-based (docs/queries.md shows it in SQL);
#: measured against it, alpha = 0.01 peaked at 0.996% on a pareto mix
#: (bench/sketch_compare.py), too close to the bound.
RELATIVE_ACCURACY = 0.005
_FORMAT = 1
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
#: Values at or below this count as zeros (``DDSketch.add``).
_MIN_POSITIVE = _MAPPING.min_possible
_LN2 = math.log(2)  # math.log(v, 2) is log(v) / log(2): the mapping's formula
_HEADER = struct.Struct("<BddQQ")  # format, min, max, zero_count, n_bins
#: Keys are far inside +-2**31 (a float's exponent is at most 1024: |key| < 72,000),
#: so (sketch, key) pairs sort as one int64: sketch << 32 | key + 2**31.
_KEY_BIAS = 1 << 31
_NO_BINS: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
_NO_BINS.flags.writeable = False


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

#: Sketches of at least this many bins are encoded and decoded with numpy
#: (``_varints``, ``_unvarints``: ~20 us whatever the size); below it, a
#: varint at a time is quicker.
_COLUMNAR_BINS = 48


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


def _unvarints(data: bytes | memoryview, count: int) -> tuple[npt.NDArray[np.uint64], int]:
    """The first ``count`` varints of ``data`` and the bytes they took, in one pass.

    A varint ends at each byte below 0x80; each byte's 7 bits are shifted by
    its place in its varint, and each varint's bytes summed.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if len(ends) < count:
        raise ValueError("sketch bins cut short")
    used = int(ends[count - 1]) + 1 if count else 0
    raw, ends = raw[:used], ends[:count]
    starts = np.empty(count, dtype=np.int64)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    place = np.arange(used, dtype=np.int64) - np.repeat(starts, ends - starts + 1)
    if int(place.max(initial=0)) > 9:
        raise ValueError("sketch varint longer than 64 bits")
    parts = (raw & 0x7F).astype(np.uint64) << (place.astype(np.uint64) * np.uint64(7))
    return np.add.reduceat(parts, starts) if count else parts[:0], used


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


class QuantileSketch:
    """Non-negative values only (latencies, speeds); counts are exact integers.

    ``_keys`` and ``_counts`` are never changed in place (a merge into an
    empty sketch shares the other's arrays); every change replaces them.
    """

    __slots__ = ("_count", "_counts", "_keys", "_max", "_min", "_zero_count")

    def __init__(self) -> None:
        self._keys: npt.NDArray[np.int64] = _NO_BINS
        self._counts: npt.NDArray[np.int64] = _NO_BINS
        self._zero_count = 0
        self._count = 0
        self._min = math.inf
        self._max = -math.inf

    def add(self, value: float) -> None:
        """Add one value (``add_many`` for a column: the same bins)."""
        v = float(value)
        self._count += 1
        if v < self._min:
            self._min = v
        if v > self._max:
            self._max = v
        if not v > _MIN_POSITIVE:
            self._zero_count += 1
            return
        key = int(_keys(np.array([v]))[0])
        i = int(np.searchsorted(self._keys, key))
        if i < len(self._keys) and self._keys[i] == key:
            counts = self._counts.copy()  # never in place: the arrays may be shared
            counts[i] += 1
            self._counts = counts
        else:
            self._keys = np.insert(self._keys, i, key)
            self._counts = np.insert(self._counts, i, 1)

    def add_many(self, values: npt.NDArray[np.float64]) -> None:
        """Add a column of values at once."""
        add_grouped([self], np.zeros(len(values), dtype=np.intp), values)

    def merge(self, other: QuantileSketch) -> None:
        if not other._count:
            return
        if not len(self._keys):
            self._keys, self._counts = other._keys, other._counts
        elif len(other._keys):
            self._keys, self._counts = _sum_bins(
                [self._keys, other._keys], [self._counts, other._counts]
            )
        self._add_totals(other)

    def _add_totals(self, other: QuantileSketch) -> None:
        self._zero_count += other._zero_count
        self._count += other._count
        if other._min < self._min:
            self._min = other._min
        if other._max > self._max:
            self._max = other._max

    @classmethod
    def merged(cls, sketches: Sequence[QuantileSketch]) -> QuantileSketch:
        """One sketch holding all of ``sketches`` (their bins summed in one pass)."""
        out = cls()
        full = [s for s in sketches if s._count]
        with_bins = [s for s in full if len(s._keys)]
        if len(with_bins) == 1:
            out._keys, out._counts = with_bins[0]._keys, with_bins[0]._counts
        elif with_bins:
            out._keys, out._counts = _sum_bins(
                [s._keys for s in with_bins], [s._counts for s in with_bins]
            )
        for s in full:
            out._add_totals(s)
        return out

    @property
    def count(self) -> int:
        return self._count

    def quantile(self, q: float) -> float | None:
        """The q-quantile (lower rank, rank floor(q * (n - 1))), or None when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """The package's ``get_quantile_value`` of each of ``qs``, clamped to [min, max].

        The rank is ``q * (count - 1)``; below the zero count the value is 0,
        otherwise it is the value of the first bin whose running count
        exceeds the rank less the zeros (the package's ``key_at_rank``; bins
        without values, which the package's dense store also holds, never
        change which bin that is). The bin's representative value may lie a
        hair outside [min, max], hence the clamp.
        """
        if not self._count:
            return [None] * len(qs)
        running: npt.NDArray[np.int64] | None = None
        out: list[float | None] = []
        for q in qs:
            if not 0 <= q <= 1:
                out.append(None)
                continue
            rank = q * (self._count - 1)
            if rank < self._zero_count:
                value = 0.0
            else:
                if running is None:
                    running = np.cumsum(self._counts)
                # Running counts are whole: exceeding ``r`` is exceeding floor(r).
                i = int(np.searchsorted(running, math.floor(rank - self._zero_count), "right"))
                value = _MAPPING.value(int(self._keys[min(i, len(self._keys) - 1)]))
            out.append(float(min(max(value, self._min), self._max)))
        return out

    def to_bytes(self) -> bytes:
        n = len(self._keys)
        if n >= _COLUMNAR_BINS:
            return encode_sketches([self])[0]
        head = self._header(n)
        if not n:
            return head
        keys = self._keys.tolist()
        counts = self._counts.tolist()
        # The first key is written against 0, the others against the previous
        # one (ascending, so the zig-zag of a delta is twice the delta).
        values = [_zigzag(keys[0]), counts[0]]
        values += [
            x
            for pair in zip([(b - a) << 1 for a, b in pairwise(keys)], counts[1:], strict=True)
            for x in pair
        ]
        table = _VARINTS
        return head + b"".join([table[v] if v < _TABULATED else _varint(v) for v in values])

    def _header(self, n_bins: int) -> bytes:
        return _HEADER.pack(_FORMAT, self._min, self._max, self._zero_count, n_bins)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> QuantileSketch:
        buf = memoryview(data)
        fmt, vmin, vmax, zero, n_bins = _HEADER.unpack_from(buf, 0)
        if fmt != _FORMAT:
            raise ValueError(f"unknown sketch format {fmt}")
        self = cls()
        if n_bins >= _COLUMNAR_BINS:
            values, _ = _unvarints(buf[_HEADER.size :], 2 * n_bins)
            deltas = values[0::2].astype(np.int64)
            deltas[0] = _unzigzag(int(values[0]))
            deltas[1:] >>= 1
            self._keys = np.cumsum(deltas)
            self._counts = values[1::2].astype(np.int64)
        elif n_bins:
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
            self._keys = np.array(keys, dtype=np.int64)
            self._counts = np.array(counts, dtype=np.int64)
        self._zero_count = zero
        self._count = zero + int(self._counts.sum())
        if self._count:
            self._min, self._max = vmin, vmax
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantileSketch) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:  # mutable: identity hash like any mutable object
        return id(self)


def _sum_bins(
    keys: Sequence[npt.NDArray[np.int64]], counts: Sequence[npt.NDArray[np.int64]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The bins of several sketches added together: each key once, ascending."""
    k = np.concatenate(keys)
    c = np.concatenate(counts)
    order = np.argsort(k, kind="stable")
    k, c = k[order], c[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return k[starts], np.add.reduceat(c, starts)


def _keys(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The package's key (``LogarithmicMapping.key``) of each value, in one pass.

    The ceiling of ``log(v) / log(2) * multiplier``, plus the offset, in the
    package's order of operations; ``tests/unit/aggregate/test_columns.py``
    checks it against the package key by key over every magnitude.
    """
    keys = np.ceil(np.log(values) / _LN2 * _MAPPING._multiplier).astype(np.int64)
    keys += int(_MAPPING._offset)
    return keys


def group_order(group: npt.NDArray[np.intp], groups: int) -> npt.NDArray[np.intp]:
    """``np.argsort(group, kind="stable")`` for group numbers below ``groups``.

    numpy's stable sort of 16-bit integers is a radix sort: for the usual
    batch (fewer than 65,536 buckets) it is ten times quicker than the
    timsort it uses for 64-bit ones, with the same result.
    """
    if groups <= 1 << 16:
        return np.argsort(group.astype(np.uint16), kind="stable")
    return np.argsort(group, kind="stable")


def add_grouped(
    sketches: Sequence[QuantileSketch],
    group: npt.NDArray[np.intp],
    values: npt.NDArray[np.float64],
) -> None:
    """Add ``values[i]`` to ``sketches[group[i]]``, for a whole column at once.

    The keys of every value come from one array operation; the (sketch,
    key) pairs are counted with one sort and merged into the sketches' bins
    together (``_add_pairs``): the Python work is a few steps per touched
    sketch, not per value. Values at or below the mapping's smallest
    distinguishable value count as zeros, as in ``DDSketch.add``.
    """
    n = len(values)
    if not n:
        return
    order = group_order(group, len(sketches))
    g = group[order]
    v = values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    present = g[starts]
    sizes = np.diff(np.r_[starts, n]).tolist()
    lows = np.minimum.reduceat(v, starts).tolist()
    highs = np.maximum.reduceat(v, starts).tolist()
    positive = v > _MIN_POSITIVE
    zeros = np.bincount(g[~positive], minlength=len(sketches))[present].tolist()
    for j, gi in enumerate(present.tolist()):
        sk = sketches[gi]
        sk._zero_count += zeros[j]
        sk._count += sizes[j]
        if lows[j] < sk._min:
            sk._min = lows[j]
        if highs[j] > sk._max:
            sk._max = highs[j]
    pg = g[positive]
    if not len(pg):
        return
    keys = _keys(v[positive])
    # (sketch, key) as one sortable number; equal numbers are one bin.
    code = np.sort((pg.astype(np.int64) << 32) | (keys + _KEY_BIAS))
    bin_starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    counts = np.diff(np.r_[bin_starts, len(code)])
    code = code[bin_starts]
    owners = code >> 32
    touched = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    targets = [sketches[i] for i in owners[touched].tolist()]
    local = np.repeat(np.arange(len(targets), dtype=np.int64), np.diff(np.r_[touched, len(code)]))
    _add_pairs(targets, (local << 32) | (code & 0xFFFFFFFF), counts)


def _add_pairs(
    targets: Sequence[QuantileSketch],
    code: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
) -> None:
    """Add ``counts[i]`` to bin ``code[i] & 0xFFFFFFFF`` (biased key) of ``targets[code[i] >> 32]``.

    ``code`` ascends without repeats. The targets' bins are laid end to end
    in the same (sketch, key) order; a pair whose bin exists adds to it, the
    others are inserted at their place (``searchsorted``); then each target
    takes back its own slice, copied so that no sketch keeps the whole
    batch's arrays alive.
    """
    t = len(targets)
    keys_of = [s._keys for s in targets]
    lengths = np.fromiter(map(len, keys_of), dtype=np.int64, count=t)
    old_keys = np.concatenate(keys_of)
    old_counts = np.concatenate([s._counts for s in targets])
    old_code = (np.repeat(np.arange(t, dtype=np.int64), lengths) << 32) | (old_keys + _KEY_BIAS)
    at = np.searchsorted(old_code, code)
    hit = at < len(old_code)
    hit[hit] = old_code[at[hit]] == code[hit]
    old_counts[at[hit]] += counts[hit]
    miss = ~hit
    if miss.any():
        where = at[miss]
        new_code = code[miss]
        old_keys = np.insert(old_keys, where, (new_code & 0xFFFFFFFF) - _KEY_BIAS)
        old_counts = np.insert(old_counts, where, counts[miss])
        lengths += np.bincount(new_code >> 32, minlength=t)
    ends = np.cumsum(lengths).tolist()
    lo = 0
    for s, hi in zip(targets, ends, strict=True):
        s._keys = old_keys[lo:hi].copy()
        s._counts = old_counts[lo:hi].copy()
        lo = hi


def encode_sketches(sketches: Sequence[QuantileSketch]) -> list[bytes]:
    """``to_bytes`` of each sketch, the bins of all of them in one numpy pass: the same bytes.

    A worker's batch writes back every bucket it touched, two sketches
    each. Here every sketch's bins are laid end to end, and the deltas and
    the varints are each one array operation for the whole batch; the
    Python work left per sketch is its header and a slice.
    ``tests/unit/aggregate/test_sketch_bytes.py`` compares it with the
    one-at-a-time encoding sketch for sketch.
    """
    n = len(sketches)
    if not n:
        return []
    keys_of = [q._keys for q in sketches]
    lengths = np.fromiter(map(len, keys_of), dtype=np.int64, count=n)
    m = int(lengths.sum())
    if m:
        keys = np.concatenate(keys_of)
        values = np.empty(2 * m, dtype=np.uint64)
        values[1::2] = np.concatenate([q._counts for q in sketches])
        # Each sketch's first key against 0 (zig-zag), the others against the
        # previous one (ascending within a sketch: twice the delta).
        first = np.zeros(m, dtype=bool)
        first[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
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
    pair_end = np.cumsum(lengths)
    byte_end = cum[2 * pair_end].tolist()
    byte_start = cum[2 * (pair_end - lengths)].tolist()
    return [
        q._header(k) + body[lo:hi]
        for q, k, lo, hi in zip(sketches, lengths.tolist(), byte_start, byte_end, strict=True)
    ]
