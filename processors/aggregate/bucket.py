"""One hour of one (model, provider): the unit of state, of merging and of storage.

Pure: no Kafka, no Faust, no ClickHouse. A bucket is initialised empty, events
are added, buckets merge (across providers for the all-providers row, across
hours for the rolling 7 days), and ``figures()`` turns a bucket into the
numbers of PRODUCT.md. Rates and quantiles are computed only in ``figures()``,
never stored, so that merging stays exact.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from processors.aggregate.sketch import QuantileSketch
from schemas.event import EXCLUDED_FROM_ERROR_RATE, RequestEvent
from schemas.stats import Figures

__all__ = ["HourBucket"]

_FORMAT = 1
_HEAD = struct.Struct("<BQQQQQII")  # format, requests, in, out, errors, denom, len(ttft), len(tps)


def _speed(output_tokens: int, generation_ms: float) -> float | None:
    """Tokens per second of generation, or None when it is not a finite number.

    Valid events keep durations to the microsecond (``schemas.event``), so the
    generation time is 0 or at least about a microsecond and the speed is
    finite. Rows stored before that rule could hold a generation time so small
    that the division underflows to 0 or overflows; such a row counts as a
    request without a speed instead of stopping the stats of every model.
    """
    seconds = generation_ms / 1000.0
    if seconds <= 0.0:
        return None
    try:
        speed = output_tokens / seconds
    except OverflowError:
        return None
    return speed if math.isfinite(speed) else None


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
        """Count one event, following "What the numbers mean" to the letter."""
        self.add_values(
            event.status,
            event.error_type,
            event.ttft_ms,
            event.latency_ms,
            event.input_tokens,
            event.output_tokens,
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
        self.requests += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if error_type not in EXCLUDED_FROM_ERROR_RATE:
            self.error_denominator += 1
            if status == "error":
                self.errors += 1
        if status == "ok" and ttft_ms is not None:
            self.ttft.add(ttft_ms)
            if output_tokens >= 2 and latency_ms > ttft_ms:
                speed = _speed(output_tokens, latency_ms - ttft_ms)
                if speed is not None:
                    self.output_tps.add(speed)

    def merge(self, other: HourBucket) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.errors += other.errors
        self.error_denominator += other.error_denominator
        self.ttft.merge(other.ttft)
        self.output_tps.merge(other.output_tps)

    def figures(self) -> Figures:
        denom = self.error_denominator
        return Figures(
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            traffic_tokens=self.input_tokens + self.output_tokens,
            errors=self.errors,
            error_denominator=denom,
            error_rate=(self.errors / denom) if denom else None,
            ttft_samples=self.ttft.count,
            ttft_p50_ms=self.ttft.quantile(0.50),
            ttft_p95_ms=self.ttft.quantile(0.95),
            ttft_p99_ms=self.ttft.quantile(0.99),
            output_tps_samples=self.output_tps.count,
            output_tps_p50=self.output_tps.quantile(0.50),
        )

    def to_bytes(self) -> bytes:
        t = self.ttft.to_bytes()
        s = self.output_tps.to_bytes()
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
