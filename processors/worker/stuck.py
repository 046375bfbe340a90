"""Stuck partitions: lag that stays while nothing of the partition is folded.

A worker can hold a partition and still not move it on (docs/architecture.md,
"Partition stalls"): the consumer stopped delivering it, a fold keeps
failing and being retried, the state waits for something that never comes.
Its models' rows then stop changing while the events pile up, and nothing
else says so. This module decides, from observations the worker's health
timer feeds it, which held partitions are stuck. It does no I/O: it returns
what to log and count, and the caller logs and counts (``metrics.py``).

An observation is (partition, end offset, position, folded, time): the log's
end offset, the group's committed position in it, a running count of what
the worker folded for the partition, and a monotonic time. The rules:

1. **Caught up is healthy.** A partition whose lag (end - position) is 0 or
   less is not stuck, and its stall clock is cleared.
2. **Progress restarts the clock.** If the folded count grew, or the position
   moved forward, since the last observation, the partition is moving: its
   stall clock restarts at this observation.
3. **Lag without progress for a window is stuck.** A partition with lag > 0
   (growing or not) and no progress for ``window_s`` or more becomes stuck;
   that transition is reported once (``stuck``) and counted once.
4. **Bounded repetition.** While it stays stuck, it is reported again
   (``still_stuck``) at most every ``repeat_s``.
5. **Recovery is reported once.** A stuck partition that makes progress, or
   whose lag falls to 0, is reported ``recovered``.
6. **Moving partitions are not judged.** An observation made while
   partitions move (a rebalance, the tables' recovery) restarts the clock
   and yields nothing: no fold is expected then.
7. **Only held partitions count.** ``retain`` forgets every partition not
   named (revoked): it is no longer stuck here, and nothing is reported.
8. **Unknown offsets are no evidence.** An observation whose end offset or
   position is unknown (None) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["StuckDetector", "Verdict"]

Kind = Literal["stuck", "still_stuck", "recovered"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Something to log about one partition (and, for ``stuck``, to count)."""

    kind: Kind
    partition: int
    lag: int
    #: Lag when the stall began (rule 3 compares it with ``lag``: growing or not).
    lag_at_start: int
    #: Seconds since the partition last made progress.
    stalled_s: float

    def message(self) -> str:
        """One log line saying what happened and what to do."""
        if self.kind == "recovered":
            return (
                f"partition {self.partition}: folding again after {self.stalled_s:.0f} s "
                f"(lag {self.lag:,})"
            )
        trend = (
            f"grew from {self.lag_at_start:,}"
            if self.lag > self.lag_at_start
            else f"was {self.lag_at_start:,}"
        )
        again = "still " if self.kind == "still_stuck" else ""
        return (
            f"partition {self.partition}: {again}stuck: lag {self.lag:,} records ({trend}) "
            f"and nothing folded for {self.stalled_s:.0f} s; if it lasts, restart the worker "
            "holding it (docs/deploy.md, Health)"
        )


@dataclass(slots=True)
class _State:
    position: int
    folded: int
    since: float  # when the partition last made progress (or the clock restarted)
    lag_at_start: int
    stuck: bool = False
    reported_at: float = 0.0


class StuckDetector:
    """Decides which held partitions are stuck; fed one observation per partition per tick."""

    def __init__(self, window_s: float, *, repeat_s: float | None = None) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self.repeat_s = repeat_s if repeat_s is not None else max(300.0, 5 * window_s)
        self._parts: dict[int, _State] = {}
        #: Partitions that became stuck, in all (rule 3 counts each transition).
        self.stuck_total = 0

    @property
    def stuck(self) -> frozenset[int]:
        """The partitions stuck now."""
        return frozenset(p for p, s in self._parts.items() if s.stuck)

    def observe(
        self,
        partition: int,
        end_offset: int | None,
        position: int | None,
        folded: int,
        now: float,
        *,
        moving: bool = False,
    ) -> Verdict | None:
        """Take one observation; return what to report about it, if anything."""
        if end_offset is None or position is None:
            return None  # rule 8
        lag = max(0, end_offset - position)
        state = self._parts.get(partition)
        if state is None:
            self._parts[partition] = _State(position, folded, now, lag)
            return None
        progressed = folded > state.folded or position > state.position
        state.position, state.folded = position, folded
        if moving:  # rule 6
            return self._restart(state, partition, lag, now, report=False)
        if lag == 0 or progressed:  # rules 1, 2 and 5
            return self._restart(state, partition, lag, now, report=True)
        stalled = now - state.since
        if stalled < self.window_s:
            return None
        if not state.stuck:  # rule 3
            state.stuck = True
            state.reported_at = now
            self.stuck_total += 1
            return Verdict("stuck", partition, lag, state.lag_at_start, stalled)
        if now - state.reported_at >= self.repeat_s:  # rule 4
            state.reported_at = now
            return Verdict("still_stuck", partition, lag, state.lag_at_start, stalled)
        return None

    def _restart(
        self, state: _State, partition: int, lag: int, now: float, *, report: bool
    ) -> Verdict | None:
        was_stuck, stalled = state.stuck, now - state.since
        state.since, state.lag_at_start, state.stuck = now, lag, False
        if was_stuck and report:
            return Verdict("recovered", partition, lag, lag, stalled)
        return None

    def retain(self, partitions: Iterable[int]) -> None:
        """Forget every partition not in ``partitions`` (rule 7)."""
        keep = set(partitions)
        for partition in [p for p in self._parts if p not in keep]:
            del self._parts[partition]
