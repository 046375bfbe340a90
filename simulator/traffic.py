"""The shape of traffic over time: popularity, the daily cycle, provider incidents.

Pure functions of the catalog, a seed and a time (epoch milliseconds, UTC),
so backfill and live mode agree on when an incident happens and how busy an
hour is, and tests can ask for the incidents a run contains.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulator.catalog import MODELS, REGIONS, ModelSpec, Region

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "ZIPF_EXPONENT",
    "Incident",
    "incidents_between",
    "load",
    "model_weights",
    "provider_weights",
    "region_weights",
]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ZIPF_EXPONENT = 1.1
#: Local-time daily cycle: busiest mid-afternoon, quietest before dawn.
_PEAK_HOUR = 15.0
_AMPLITUDE = 0.6
_WEEKEND = 0.7
#: Extra incidents a day beyond the first, and their chance.
_SECOND_INCIDENT = 0.35


def model_weights(models: tuple[ModelSpec, ...] = MODELS) -> list[float]:
    """Zipf-like popularity: the k-th model gets 1 / k^s of the traffic (normalised)."""
    raw = [1.0 / (k + 1) ** ZIPF_EXPONENT for k in range(len(models))]
    total = sum(raw)
    return [w / total for w in raw]


def provider_weights(models: tuple[ModelSpec, ...] = MODELS) -> dict[str, float]:
    """Each provider's share of all traffic."""
    out: dict[str, float] = {}
    for model, weight in zip(models, model_weights(models), strict=True):
        for provider, share in model.providers:
            out[provider] = out.get(provider, 0.0) + weight * share
    return out


def _activity(t_ms: int, region: Region) -> float:
    local_h = (t_ms / HOUR_MS + region.utc_offset_h) % 24
    local_day = math.floor((t_ms / HOUR_MS + region.utc_offset_h) / 24)
    weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Sat, Sun
    base = 1.0 + _AMPLITUDE * math.cos(2 * math.pi * (local_h - _PEAK_HOUR) / 24)
    return base * (_WEEKEND if weekday >= 5 else 1.0)


def region_weights(t_ms: int, regions: tuple[Region, ...] = REGIONS) -> list[float]:
    """Each region's request rate at ``t_ms`` in units of the mean daily rate."""
    return [r.share * _activity(t_ms, r) for r in regions]


def load(t_ms: int, regions: tuple[Region, ...] = REGIONS) -> float:
    """The whole router's request rate at ``t_ms`` relative to its daily mean."""
    return sum(region_weights(t_ms, regions))


@dataclass(frozen=True, slots=True)
class Incident:
    """A provider degrades: provider errors and timeouts spike, survivors slow down."""

    provider: str
    start_ms: int
    end_ms: int
    severity: float  #: 1.0 is a typical bad hour; error multipliers scale with it

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms


def _day_incidents(seed: int, day: int, providers: dict[str, float]) -> list[Incident]:
    rng = random.Random(f"incidents:{seed}:{day}")
    names = sorted(providers)
    weights = [providers[n] ** 0.5 for n in names]  # small providers fail too
    out: list[Incident] = []
    for i in range(1 + (rng.random() < _SECOND_INCIDENT)):
        provider = rng.choices(names, weights)[0]
        if i and out and provider == out[0].provider:
            continue
        start = day * DAY_MS + int(rng.uniform(0, DAY_MS - 2 * HOUR_MS))
        duration = int(rng.uniform(45, 110) * 60_000)
        out.append(Incident(provider, start, start + duration, rng.uniform(0.7, 1.3)))
    return out


def incidents_between(
    seed: int, start_ms: int, end_ms: int, models: tuple[ModelSpec, ...] = MODELS
) -> list[Incident]:
    """Every incident overlapping [start_ms, end_ms): one or two per UTC day."""
    providers = provider_weights(models)
    out: list[Incident] = []
    for day in range(start_ms // DAY_MS, end_ms // DAY_MS + 1):
        out.extend(
            i
            for i in _day_incidents(seed, day, providers)
            if i.end_ms > start_ms and i.start_ms < end_ms
        )
    return out
