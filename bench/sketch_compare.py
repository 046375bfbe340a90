"""Measured comparison of quantile sketches on heavy-tailed TTFT samples.

    python bench/sketch_compare.py [--n 1000000] [--seed 1]

Compares our ``QuantileSketch`` (DDSketch, relative accuracy 0.005, sparse
varint encoding) with DDSketch at 0.01 (same encoding), and, when their
packages are installed, a t-digest and a KLL sketch:

- ``datasketches`` (Apache DataSketches): ``kll_doubles_sketch`` and ``tdigest_double``
- ``tdigest`` (the pure-Python package; unmaintained since 2019, kept for reference)

A sketch whose package is missing is skipped with a message. For each
data set (lognormal, and a lognormal/pareto mix) it reports the relative
value error at p50/p95/p99/p99.9 against the exact quantile, under both the
lower-rank definition (``sorted[int(q*(n-1))]``) and numpy's linear
interpolation (the larger of the two is shown), the serialized size, the cost
of ``add()`` per value (one Python call per value, as the worker adds), and
whether merging 10 parts gives the same answers as one sketch over everything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddsketch import DDSketch

from processors.aggregate.sketch import RELATIVE_ACCURACY, QuantileSketch

QUANTILES = (0.5, 0.95, 0.99, 0.999)
PARTS = 10


@dataclass
class Impl:
    name: str
    new: Callable[[], object]
    add: Callable[[object, float], None]
    quantile: Callable[[object, float], float]
    size: Callable[[object], int]
    merge: Callable[[object, object], None]
    same_bytes: Callable[[object, object], bool] | None = None


def _package_bytes(sk: DDSketch) -> int:
    """The length of the package's sketch in our encoding: header, then varint pairs."""
    store = sk._store
    keys = [i + store.offset for i, c in enumerate(store.bins) if c]
    counts = [int(c) for c in store.bins if c]
    deltas = [(keys[0] << 1) ^ (keys[0] >> 63)] if keys else []
    deltas += [(b - a) << 1 for a, b in itertools.pairwise(keys)]
    return 33 + sum((max(v, 1).bit_length() + 6) // 7 for v in deltas + counts)


def implementations() -> tuple[list[Impl], list[str]]:
    impls = []
    skipped = []
    impls.append(
        Impl(
            f"ours: DDSketch a={RELATIVE_ACCURACY}",
            QuantileSketch,
            lambda s, v: s.add(v),
            lambda s, q: s.quantile(q),
            lambda s: len(s.to_bytes()),
            lambda s, o: s.merge(o),
            lambda a, b: a.to_bytes() == b.to_bytes(),
        )
    )
    # The package's own sketch at the contract's 1% (its value, not clamped
    # to [min, max]; its size in our sparse encoding).
    impls.append(
        Impl(
            "DDSketch a=0.01 (the package)",
            lambda: DDSketch(relative_accuracy=0.01),
            lambda s, v: s.add(v),
            lambda s, q: s.get_quantile_value(q),
            _package_bytes,
            lambda s, o: s.merge(o),
        )
    )
    try:
        import datasketches as ds

        impls.append(
            Impl(
                "KLL k=200 (datasketches)",
                lambda: ds.kll_doubles_sketch(200),
                lambda s, v: s.update(v),
                lambda s, q: s.get_quantile(q, True),
                lambda s: len(s.serialize()),
                lambda s, o: s.merge(o),
            )
        )
        impls.append(
            Impl(
                "t-digest k=100 (datasketches)",
                lambda: ds.tdigest_double(100),
                lambda s, v: s.update(v),
                lambda s, q: s.get_quantile(q),
                lambda s: len(s.serialize()),
                lambda s, o: s.merge(o),
            )
        )
    except ImportError:
        skipped.append("datasketches not installed: KLL and datasketches t-digest skipped")
    try:
        from tdigest import TDigest

        def td_merge(s: object, o: object) -> None:
            s.update_centroids_from_list(o.centroids_to_list())  # type: ignore[attr-defined]

        impls.append(
            Impl(
                "t-digest d=0.01 (tdigest pkg)",
                lambda: TDigest(delta=0.01, K=25),
                lambda s, v: s.update(v),
                lambda s, q: s.percentile(q * 100),
                lambda s: len(json.dumps(s.to_dict(), separators=(",", ":"))),
                td_merge,
            )
        )
    except ImportError:
        skipped.append("tdigest not installed: the tdigest package's t-digest skipped")
    return impls, skipped


def datasets(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lognormal = rng.lognormal(math.log(800.0), 1.0, n)
    k = int(n * 0.3)
    mix = np.concatenate(
        [rng.lognormal(math.log(500.0), 0.6, n - k), 300.0 * (1.0 + rng.pareto(1.3, k))]
    )
    rng.shuffle(mix)
    return {"lognormal s=1": lognormal, "lognormal+pareto(1.3)": mix}


def exact(values: np.ndarray) -> dict[float, tuple[float, float]]:
    s = np.sort(values)
    out = {}
    for q in QUANTILES:
        lower = float(s[int(q * (len(s) - 1))])
        linear = float(np.quantile(s, q))
        out[q] = (lower, linear)
    return out


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a)


def build(impl: Impl, values: Sequence[float]) -> tuple[object, float]:
    s = impl.new()
    add = impl.add
    t0 = time.perf_counter()
    for v in values:
        add(s, v)
    return s, time.perf_counter() - t0


def run(n: int, seed: int) -> None:
    impls, skipped = implementations()
    for msg in skipped:
        print(f"SKIP: {msg}")
    header = (
        f"{'sketch':<31} {'data':<22} "
        + " ".join(f"{'p' + format(q * 100, 'g'):>8}" for q in QUANTILES)
        + f" {'max':>8} {'bytes':>8} {'us/add':>7}  merge of {PARTS} parts"
    )
    print(f"n = {n:,} values per data set, seed {seed}; errors: max(vs lower rank, vs linear)")
    print(header)
    print("-" * len(header))
    for data_name, arr in datasets(n, seed).items():
        values = arr.tolist()
        truth = exact(arr)
        parts = [values[i::PARTS] for i in range(PARTS)]
        for impl in impls:
            single, secs = build(impl, values)
            errs = []
            for q in QUANTILES:
                got = impl.quantile(single, q)
                lower, linear = truth[q]
                errs.append(max(rel(got, lower), rel(got, linear)))
            merged = impl.new()
            for part in parts:
                sk, _ = build(impl, part)
                impl.merge(merged, sk)
            diffs = [rel(impl.quantile(merged, q), impl.quantile(single, q)) for q in QUANTILES]
            if impl.same_bytes is not None and impl.same_bytes(merged, single):
                merge_note = "exact (identical bytes)"
            elif max(diffs) == 0:
                merge_note = "same quantiles"
            else:
                merge_note = f"not exact: quantiles differ up to {max(diffs):.3%}"
            print(
                f"{impl.name:<31} {data_name:<22} "
                + " ".join(f"{e:>8.3%}" for e in errs)
                + f" {max(errs):>8.3%} {impl.size(single):>8,} {secs / n * 1e6:>7.2f}  {merge_note}"
            )
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    print(f"\nmachine: {cores} cores ({usable} usable by this process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="values per data set")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    run(args.n, args.seed)


if __name__ == "__main__":
    main()
