"""The columns an hour bucket is built from: numpy arrays, one entry per event.

Why columns: adding events one at a time cost tens of microseconds each in
Python; a batch grouped by (model, provider, hour) is added to each bucket
with a handful of array operations (``HourBucket.add_columns``), whatever its
size. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.event import EXCLUDED_FROM_ERROR_RATE

__all__ = ["BucketInputs"]

_Bool = npt.NDArray[np.bool_]
_Float = npt.NDArray[np.float64]
_Int = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class BucketInputs:
    """What counting needs of each event; ``ttft_ms`` is NaN where the event has none."""

    ok: _Bool  # status == "ok"
    error: _Bool  # status == "error"
    excluded: _Bool  # error_type excluded from the error rate
    ttft_ms: _Float
    latency_ms: _Float
    input_tokens: _Int
    output_tokens: _Int

    def __len__(self) -> int:
        return len(self.latency_ms)

    @classmethod
    def from_values(
        cls,
        status: Sequence[str],
        error_type: Sequence[str | None],
        ttft_ms: Sequence[float | None],
        latency_ms: Sequence[float],
        input_tokens: Sequence[int],
        output_tokens: Sequence[int],
    ) -> BucketInputs:
        """Columns from plain Python sequences (decoded events, rows read back)."""
        return cls(
            ok=np.fromiter((s == "ok" for s in status), np.bool_, len(status)),
            error=np.fromiter((s == "error" for s in status), np.bool_, len(status)),
            excluded=np.fromiter(
                (e in EXCLUDED_FROM_ERROR_RATE for e in error_type), np.bool_, len(error_type)
            ),
            ttft_ms=np.fromiter(
                (np.nan if t is None else t for t in ttft_ms), np.float64, len(ttft_ms)
            ),
            latency_ms=np.asarray(latency_ms, dtype=np.float64),
            input_tokens=np.asarray(input_tokens, dtype=np.int64),
            output_tokens=np.asarray(output_tokens, dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence[BucketInputs]) -> BucketInputs:
        """The columns of ``parts`` end to end (the events of several chunks as one column)."""
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.__slots__))

    def take(self, index: npt.NDArray[np.intp] | Sequence[int]) -> BucketInputs:
        """The events at ``index`` (a group of one bucket), as new columns."""
        idx = np.asarray(index, dtype=np.intp)
        return BucketInputs(
            self.ok[idx],
            self.error[idx],
            self.excluded[idx],
            self.ttft_ms[idx],
            self.latency_ms[idx],
            self.input_tokens[idx],
            self.output_tokens[idx],
        )
