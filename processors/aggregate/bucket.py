"""One hour of one (model, provider): the unit of state, of merging and of storage.

Pure: no Kafka, no Faust, no ClickHouse. A bucket is initialised empty, events
are added, buckets merge (across providers for the all-providers row, across
hours for the rolling 7 days), and ``figures()`` turns a bucket into the
numbers of docs/definitions.md. Rates and quantiles are computed only in ``figures()``,
never stored, so that merging stays exact.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from processors.aggregate.columns import BucketInputs
from processors.aggregate.sketch import (
    QuantileSketch,
    add_grouped,
    encode_sketches,
    group_order,
)
from schemas.event import RequestEvent
from schemas.stats import Figures

__all__ = ["HourBucket"]

_FORMAT = 1
_HEAD = struct.Struct("<BQQQQQII")  # format, requests, in, out, errors, denom, len(ttft), len(tps)


@dataclass(slots=True)
class HourBucket:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0
    error_denominator: int = 0
    ttft: QuantileSketch = field(default_factory=QuantileSketch)
    output_tps: QuantileSketch = field(default_factory=QuantileSketch)

    def add(self, event: RequestEvent) -> None:
        """Count one event (the column rules below, for a column of one)."""
        self.add_columns(
            BucketInputs.from_values(
                [event.status],
                [event.error_type],
                [event.ttft_ms],
                [event.latency_ms],
                [event.input_tokens],
                [event.output_tokens],
            )
        )

    def add_values(
        self,
        status: str,
        error_type: str | None,
        ttft_ms: float | None,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        """The same as ``add`` from plain column values (rows read back from ClickHouse)."""
        self.add_columns(
            BucketInputs.from_values(
                [status], [error_type], [ttft_ms], [latency_ms], [input_tokens], [output_tokens]
            )
        )

    def add_columns(self, cols: BucketInputs) -> None:
        """Count a column of events into this bucket (``add_groups`` with one group)."""
        HourBucket.add_groups([self], np.zeros(len(cols), dtype=np.intp), cols)

    @staticmethod
    def add_groups(
        buckets: Sequence[HourBucket], group: npt.NDArray[np.intp], cols: BucketInputs
    ) -> None:
        """Count event ``i`` of the columns into ``buckets[group[i]]``: the one definition.

        Following docs/definitions.md to the letter: every event is a request
        and adds its tokens; an event excluded from the error rate
        (``client_error``, ``cancelled``) is in neither its numerator nor its
        denominator; TTFT is sketched for ``status = ok`` with a ``ttft_ms``;
        output speed for those with ``output_tokens >= 2`` and
        ``latency_ms > ttft_ms``, as tokens per second of generation. Valid
        events keep durations to the microsecond (``schemas.event``), so a
        positive generation time gives a finite speed; the finiteness check
        keeps a row stored before that rule from stopping every model's stats.

        Columnar: sums per bucket come from one sort and ``reduceat``, the
        sketches from ``add_grouped``; Python runs once per touched bucket,
        not once per event.
        """
        n = len(cols)
        if not n:
            return
        order = group_order(group, len(buckets))
        g = group[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])

        def per_bucket(column: npt.NDArray[Any]) -> list[int]:
            summed: list[int] = np.add.reduceat(column[order], starts).tolist()
            return summed

        counted = ~cols.excluded
        sizes = np.diff(np.r_[starts, n]).tolist()
        tokens_in = per_bucket(cols.input_tokens)
        tokens_out = per_bucket(cols.output_tokens)
        denominators = per_bucket(counted.astype(np.int64))
        errors = per_bucket((cols.error & counted).astype(np.int64))
        for j, b in enumerate(g[starts].tolist()):
            bucket = buckets[b]
            bucket.requests += sizes[j]
            bucket.input_tokens += tokens_in[j]
            bucket.output_tokens += tokens_out[j]
            bucket.error_denominator += denominators[j]
            bucket.errors += errors[j]
        ttft = cols.ttft_ms
        has_ttft = cols.ok & ~np.isnan(ttft)
        if not has_ttft.any():
            return
        add_grouped([b.ttft for b in buckets], group[has_ttft], ttft[has_ttft])
        timed = has_ttft & (cols.output_tokens >= 2)
        timed[timed] &= cols.latency_ms[timed] > ttft[timed]
        if not timed.any():
            return
        seconds = (cols.latency_ms[timed] - ttft[timed]) / 1000.0
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            speed = cols.output_tokens[timed].astype(np.float64) / seconds
        finite = (seconds > 0.0) & np.isfinite(speed)
        add_grouped([b.output_tps for b in buckets], group[timed][finite], speed[finite])

    def merge(self, other: HourBucket) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.errors += other.errors
        self.error_denominator += other.error_denominator
        self.ttft.merge(other.ttft)
        self.output_tps.merge(other.output_tps)

    @classmethod
    def merged(cls, buckets: Sequence[HourBucket]) -> HourBucket:
        """A new bucket holding all of ``buckets``: ``merge`` of each, the bins summed at once.

        Publishing sums a week of hours per key; merging them one by one
        would sort each sketch's bins once per hour.
        """
        return cls(
            sum(b.requests for b in buckets),
            sum(b.input_tokens for b in buckets),
            sum(b.output_tokens for b in buckets),
            sum(b.errors for b in buckets),
            sum(b.error_denominator for b in buckets),
            QuantileSketch.merged([b.ttft for b in buckets]),
            QuantileSketch.merged([b.output_tps for b in buckets]),
        )

    def figures(self) -> Figures:
        denom = self.error_denominator
        p50, p95, p99 = self.ttft.quantiles((0.50, 0.95, 0.99))
        return Figures(
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            traffic_tokens=self.input_tokens + self.output_tokens,
            errors=self.errors,
            error_denominator=denom,
            error_rate=(self.errors / denom) if denom else None,
            ttft_samples=self.ttft.count,
            ttft_p50_ms=p50,
            ttft_p95_ms=p95,
            ttft_p99_ms=p99,
            output_tps_samples=self.output_tps.count,
            output_tps_p50=self.output_tps.quantile(0.50),
        )

    def to_bytes(self) -> bytes:
        return self._with_sketches(self.ttft.to_bytes(), self.output_tps.to_bytes())

    @staticmethod
    def encode_many(buckets: Sequence[HourBucket]) -> list[bytes]:
        """``to_bytes`` of each bucket, their sketches encoded in one pass (``encode_sketches``)."""
        sketches = encode_sketches([s for b in buckets for s in (b.ttft, b.output_tps)])
        return [
            b._with_sketches(t, s)
            for b, t, s in zip(buckets, sketches[0::2], sketches[1::2], strict=True)
        ]

    def _with_sketches(self, t: bytes, s: bytes) -> bytes:
        head = _HEAD.pack(
            _FORMAT,
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.errors,
            self.error_denominator,
            len(t),
            len(s),
        )
        return head + t + s

    @classmethod
    def from_bytes(cls, data: bytes) -> HourBucket:
        fmt, req, tin, tout, err, denom, lt, ls = _HEAD.unpack_from(data, 0)
        if fmt != _FORMAT:
            raise ValueError(f"unknown bucket format {fmt}")
        view = memoryview(data)
        pos = _HEAD.size
        ttft = QuantileSketch.from_bytes(view[pos : pos + lt])
        tps = QuantileSketch.from_bytes(view[pos + lt : pos + lt + ls])
        return cls(req, tin, tout, err, denom, ttft, tps)
