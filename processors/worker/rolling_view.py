"""What a worker publishes: rolling rows for the models that changed, from local buckets.

Decoding 168 buckets per key on every tick would cost seconds at a thousand
keys, so the view keeps, per (model, provider), the merged sum of the
*finished* hours of the window and recomputes it only when the hour rolls
over or a late event lands in a past hour. A tick then merges that sum with
the current hour's bucket.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from processors.aggregate import (
    ALL_PROVIDERS,
    BucketKey,
    HourBucket,
    hour_of,
    hour_start,
    window_start,
)
from processors.aggregate.window import window_start_hour
from schemas.stats import HourlyRow, StatsRow

__all__ = ["MAX_HOURLY_PER_PUBLICATION", "Publication", "RollingView"]

#: (model, hour) pairs of the hourly series published per call, newest first;
#: the rest stay due. A catch-up makes every hour of the week dirty at once,
#: and publishing 100k+ rows in one go stalls the agent and balloons memory.
MAX_HOURLY_PER_PUBLICATION = 2_000
#: Decoded buckets kept between publications (bounded: a catch-up touches them all).
_FRESH_MAX = 4_000

Loader = Callable[[BucketKey], HourBucket | None]


@dataclass(slots=True)
class Publication:
    stats: list[StatsRow]
    hourly: list[HourlyRow]
    expired: list[BucketKey]


class RollingView:
    def __init__(self, load: Loader) -> None:
        self._load_stored = load
        #: Buckets the fold just built, so publishing need not decode them again.
        self._fresh: dict[BucketKey, HourBucket] = {}
        self._hours: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._past: dict[tuple[str, str], tuple[int, HourBucket]] = {}
        self._dirty_models: set[str] = set()
        self._dirty_hours: set[tuple[str, int]] = set()
        self._last_hour: int | None = None

    def reset(self, keys: Iterable[BucketKey]) -> None:
        """Forget everything and index ``keys`` (after start-up or a rebalance)."""
        self._hours.clear()
        self._past.clear()
        self._fresh.clear()
        self._dirty_models.clear()
        self._dirty_hours.clear()
        self._last_hour = None
        for key in keys:
            self._hours[(key.model, key.provider)].add(key.hour)
            self._dirty_hours.add((key.model, key.hour))

    def _load(self, key: BucketKey) -> HourBucket | None:
        fresh = self._fresh.get(key)
        return fresh if fresh is not None else self._load_stored(key)

    def note(self, key: BucketKey, bucket: HourBucket | None = None) -> None:
        """A bucket changed: its model's rows and its hour are due.

        ``bucket`` is its new state if the caller has it (never mutated after).
        """
        if bucket is not None and (key in self._fresh or len(self._fresh) < _FRESH_MAX):
            self._fresh[key] = bucket
        pk = (key.model, key.provider)
        self._hours[pk].add(key.hour)
        self._dirty_models.add(key.model)
        self._dirty_hours.add((key.model, key.hour))
        cached = self._past.get(pk)
        if cached is not None and key.hour < cached[0]:
            del self._past[pk]  # a late event changed a finished hour

    def _past_sum(self, pk: tuple[str, str], current: int, first: int) -> HourBucket:
        cached = self._past.get(pk)
        if cached is not None and cached[0] == current:
            return cached[1]
        past = [
            self._load(BucketKey(pk[0], pk[1], h)) for h in self._hours[pk] if first <= h < current
        ]
        total = HourBucket.merged([b for b in past if b is not None])
        self._past[pk] = (current, total)
        return total

    def publish(self, as_of: datetime, *, hourly: bool = True) -> Publication:
        """Rows due at ``as_of``. ``hourly=False`` keeps changed hours for a later call."""
        current = hour_of(as_of)
        first = window_start_hour(as_of)
        rolled = self._last_hour != current
        self._last_hour = current
        models = {m for m, _ in self._hours} if rolled else set(self._dirty_models)
        start = window_start(as_of)
        by_model: dict[str, list[str]] = defaultdict(list)
        for m, p in self._hours:
            if m in models:
                by_model[m].append(p)
        stats: list[StatsRow] = []
        expired: list[BucketKey] = []
        for model in sorted(by_model):
            totals: list[HourBucket] = []
            for provider in sorted(by_model[model]):
                pk = (model, provider)
                parts = [self._past_sum(pk, current, first)]
                for h in self._hours[pk]:
                    if h >= current:
                        b = self._load(BucketKey(model, provider, h))
                        if b is not None:
                            parts.append(b)
                total = HourBucket.merged(parts)
                totals.append(total)
                stats.append(StatsRow(model, provider, as_of, start, total.figures()))
                old = [h for h in self._hours[pk] if h < first]
                for h in old:
                    self._hours[pk].discard(h)
                    expired.append(BucketKey(model, provider, h))
            everything = HourBucket.merged(totals)
            stats.append(StatsRow(model, ALL_PROVIDERS, as_of, start, everything.figures()))
        for pk in [pk for pk, hours in self._hours.items() if not hours]:
            del self._hours[pk]
            self._past.pop(pk, None)
        hourly_rows: list[HourlyRow] = []
        if hourly:
            hourly_rows = self._hourly(as_of, first)
        self._dirty_models.clear()
        self._fresh.clear()
        return Publication(stats, hourly_rows, expired)

    def again(self, pub: Publication) -> None:
        """``pub`` was not delivered: its models and hours are due at the next publication."""
        self._dirty_models.update(row.model for row in pub.stats)
        self._dirty_hours.update((row.model, hour_of(row.hour)) for row in pub.hourly)

    def _hourly(self, as_of: datetime, first: int) -> list[HourlyRow]:
        rows: list[HourlyRow] = []
        wanted: dict[tuple[str, int], list[str]] = defaultdict(list)
        for m, p in self._hours:
            for h in self._hours[(m, p)]:
                if (m, h) in self._dirty_hours and h >= first:
                    wanted[(m, h)].append(p)
        due = sorted(wanted, key=lambda mh: (-mh[1], mh[0]))[:MAX_HOURLY_PER_PUBLICATION]
        self._dirty_hours = {mh for mh in self._dirty_hours if mh in wanted} - set(due)
        for model, h in sorted(due):
            providers = wanted[(model, h)]
            held: list[HourBucket] = []
            for provider in sorted(providers):
                b = self._load(BucketKey(model, provider, h))
                if b is None:
                    continue
                held.append(b)
                rows.append(HourlyRow(model, provider, hour_start(h), as_of, b.figures()))
            everything = HourBucket.merged(held)
            rows.append(HourlyRow(model, ALL_PROVIDERS, hour_start(h), as_of, everything.figures()))
        return rows
