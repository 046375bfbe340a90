"""How many bytes of records the worker's next batch may take.

A batch costs memory and time in two ways: its records (bytes) and the
bucket records it writes back (one changelog message per touched bucket,
held in memory until Kafka has them). How many buckets a byte of events
touches depends on the traffic: live traffic lands in the current hour of a
few hundred keys (a batch of 16 MiB touches a few hundred buckets), a
week-wide catch-up over thousands of keys touches thousands, and the worst
case, every event in a bucket of its own, touches one per event.

A fixed byte bound is wrong for one of them: 16 MiB left a week-wide
worker writing back every bucket every few thousand events (a third of
live throughput), and already took the worker of ``bench/state_size.py``
(every event its own bucket) past 300 MB at its peak. So the bound follows
the bucket writes: after each batch, the next one may take as many bytes
as would have caused ``writes`` bucket writes at the last batch's rate,
within ``[low, high]``. Pure logic; the app feeds it each batch's bytes and
writes.
"""

from __future__ import annotations

__all__ = ["BatchBound"]

MIB = 1024 * 1024


class BatchBound:
    """The byte bound of the next batch, from the bucket writes of the last one."""

    def __init__(
        self,
        *,
        start: int = 4 * MIB,
        low: int = 4 * MIB,
        high: int = 64 * MIB,
        writes: int = 12_500,
    ) -> None:
        if not 0 < low <= start <= high:
            raise ValueError(f"need 0 < low <= start <= high, got {low}, {start}, {high}")
        if writes < 1:
            raise ValueError(f"writes must be >= 1, got {writes}")
        self.low = low
        self.high = high
        self.writes = writes
        self.limit = start

    def __call__(self) -> int:
        """The bound for the batch being taken now."""
        return self.limit

    def after(self, batch_bytes: int, writes: int) -> None:
        """Set the next bound from a batch of ``batch_bytes`` that wrote ``writes`` buckets.

        A batch with no bytes tells nothing; one that wrote nothing lets the
        next one grow to ``high``.
        """
        if batch_bytes <= 0:
            return
        want = self.high if writes <= 0 else batch_bytes * self.writes // writes
        self.limit = max(self.low, min(self.high, want))
