"""Drive a simulator into a target: a backfill as fast as possible, then live traffic.

No terminal handling here: the caller passes a progress callback and a stop
event (set on Ctrl-C), so ``telemetry simulate`` and ``telemetry demo`` share
one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from simulator.generator import Simulator
from simulator.targets import FileTarget, HttpTarget, TargetReport, TopicTarget

__all__ = [
    "DEFAULT_EVENTS_PER_DAY",
    "LIVE_TICK_S",
    "SimulationPlan",
    "SimulationReport",
    "simulate",
]

#: Backfill volume when ``--events`` is not given.
DEFAULT_EVENTS_PER_DAY = 100_000
#: Live mode generates what is due, hands it to the target, and waits this long.
LIVE_TICK_S = 0.2
#: Live mode delivers buffered events at least this often.
_LIVE_FLUSH_S = 1.0


@dataclass(frozen=True, slots=True)
class SimulationPlan:
    backfill_days: float | None = None
    backfill_events: int | None = None  #: default DEFAULT_EVENTS_PER_DAY per day
    end: datetime | None = None  #: end of the backfill window (default now)
    rate: float | None = None  #: live events/s after the backfill
    duration_s: float | None = None  #: live mode length (None: until stopped)
    live_events: int | None = None  #: live mode stops after this many events

    def __post_init__(self) -> None:
        if self.backfill_days is None and self.rate is None:
            raise ValueError("a simulation needs a backfill, a rate, or both")
        if self.backfill_days is not None and self.backfill_days <= 0:
            raise ValueError("backfill_days must be positive")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")

    @property
    def backfill_total(self) -> int:
        if self.backfill_days is None:
            return 0
        if self.backfill_events is not None:
            return self.backfill_events
        return round(DEFAULT_EVENTS_PER_DAY * self.backfill_days)


@dataclass(frozen=True, slots=True)
class SimulationReport:
    backfilled: int
    live: int
    resent: int
    elapsed_s: float
    backfill_s: float
    target: TargetReport
    stopped: bool  #: ended by the stop event (Ctrl-C) rather than by plan


async def simulate(
    sim: Simulator,
    target: FileTarget | TopicTarget | HttpTarget,
    plan: SimulationPlan,
    *,
    stop: asyncio.Event | None = None,
    on_backfill: Callable[[int], None] | None = None,
    on_live: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Run the plan; the target is started and always closed. Callbacks get event counts."""
    stop = stop or asyncio.Event()
    started = time.perf_counter()
    backfilled = live = 0
    backfill_s = 0.0
    await target.start()
    try:
        if plan.backfill_days is not None:
            for batch in sim.backfill(
                days=plan.backfill_days, events=plan.backfill_total, end=plan.end
            ):
                await target.send(batch)
                backfilled += len(batch)
                if on_backfill:
                    on_backfill(len(batch))
                if stop.is_set():
                    break
                await asyncio.sleep(0)  # let HTTP posts progress, and signals land
            await target.flush()
            backfill_s = time.perf_counter() - started
        if plan.rate is not None and not stop.is_set():
            live = await _live(sim, target, plan, plan.rate, stop, on_live)
    finally:
        report = await target.close()
    return SimulationReport(
        backfilled=backfilled,
        live=live,
        resent=sim.resent,
        elapsed_s=time.perf_counter() - started,
        backfill_s=backfill_s,
        target=report,
        stopped=stop.is_set(),
    )


async def _live(
    sim: Simulator,
    target: FileTarget | TopicTarget | HttpTarget,
    plan: SimulationPlan,
    rate: float,
    stop: asyncio.Event,
    on_live: Callable[[int], None] | None,
) -> int:
    deadline = None if plan.duration_s is None else time.monotonic() + plan.duration_s
    cap = plan.live_events
    sent = 0
    last_flush = time.monotonic()
    for batch in sim.live(rate=rate):
        if cap is not None and sent + len(batch) > cap:
            batch = batch[: cap - sent]
        if batch:
            await target.send(batch)
            sent += len(batch)
            if on_live:
                on_live(len(batch))
        now = time.monotonic()
        if now - last_flush >= _LIVE_FLUSH_S:
            await target.flush()
            last_flush = now
        if (cap is not None and sent >= cap) or (deadline is not None and now >= deadline):
            break
        wait = LIVE_TICK_S if deadline is None else max(0.0, min(LIVE_TICK_S, deadline - now))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
        if stop.is_set():
            break
    return sent
