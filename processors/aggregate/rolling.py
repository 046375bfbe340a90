"""The rolling view: hour buckets keyed by (model, provider, hour) and the rows they publish.

Pure state, no I/O. The Faust worker and the embedded pipeline both keep their
buckets in a ``BucketKey -> HourBucket`` mapping and call these functions, so
the maths lives in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from processors.aggregate.bucket import HourBucket
from processors.aggregate.window import hour_start, in_window, window_start
from schemas.stats import HourlyRow, StatsRow

__all__ = ["ALL_PROVIDERS", "BucketKey", "hourly_rows", "rolling_rows"]

#: The provider value of the all-providers row.
ALL_PROVIDERS = ""


class BucketKey(NamedTuple):
    model: str
    provider: str
    hour: int


def rolling_rows(
    buckets: Mapping[BucketKey, HourBucket] | Iterable[tuple[BucketKey, HourBucket]],
    as_of: datetime,
    *,
    keys: Iterable[tuple[str, str]] = (),
) -> list[StatsRow]:
    """One row per (model, provider) seen in ``buckets`` plus one per model with provider ''.

    Keys whose buckets all lie outside the window still get a row with zero
    requests, so a model that went quiet shows zeros instead of stale numbers.
    ``keys`` adds (model, provider) pairs that must get a row even without
    buckets (pairs published before whose buckets have since been dropped).
    """
    items = buckets.items() if isinstance(buckets, Mapping) else buckets
    inside: dict[tuple[str, str], list[HourBucket]] = {}
    for key, bucket in items:
        held = inside.setdefault((key.model, key.provider), [])
        if in_window(key.hour, as_of):
            held.append(bucket)
    per_key = {pk: HourBucket.merged(held) for pk, held in inside.items()}
    # A model's row merges its providers' rows, not every hour bucket again:
    # merging adds integer counts and sketch bins, so the order changes nothing.
    providers: dict[str, list[HourBucket]] = defaultdict(list)
    for (model, _), acc in per_key.items():
        providers[model].append(acc)
    per_model = {model: HourBucket.merged(accs) for model, accs in providers.items()}
    for model, provider in keys:
        if provider != ALL_PROVIDERS:
            per_key.setdefault((model, provider), HourBucket())
        per_model.setdefault(model, HourBucket())
    start = window_start(as_of)
    rows = [StatsRow(m, p, as_of, start, b.figures()) for (m, p), b in sorted(per_key.items())]
    rows += [
        StatsRow(m, ALL_PROVIDERS, as_of, start, b.figures()) for m, b in sorted(per_model.items())
    ]
    return rows


def hourly_rows(
    buckets: Mapping[BucketKey, HourBucket] | Iterable[tuple[BucketKey, HourBucket]],
    as_of: datetime,
    *,
    hours: set[tuple[str, int]] | None = None,
) -> list[HourlyRow]:
    """Rows of the hourly series, per (model, provider, hour) and per (model, '', hour).

    ``hours`` limits the output to the given (model, hour) pairs (the ones that
    changed since the last publication).
    """
    items = buckets.items() if isinstance(buckets, Mapping) else buckets
    per_model: dict[tuple[str, int], list[HourBucket]] = defaultdict(list)
    rows = []
    for key, bucket in items:
        if hours is not None and (key.model, key.hour) not in hours:
            continue
        if not in_window(key.hour, as_of):
            continue
        rows.append(
            HourlyRow(key.model, key.provider, hour_start(key.hour), as_of, bucket.figures())
        )
        per_model[(key.model, key.hour)].append(bucket)
    rows += [
        HourlyRow(m, ALL_PROVIDERS, hour_start(h), as_of, HourBucket.merged(b).figures())
        for (m, h), b in per_model.items()
    ]
    rows.sort(key=lambda r: (r.model, r.provider, r.hour))
    return rows
