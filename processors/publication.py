"""Is the last publication of the embedded stats still what a refresh would publish?

Kept apart from ``processors.embedded`` (numpy, pyarrow, the aggregation core,
the validators) so that `telemetry stats` can ask with nothing but a query,
and import the refresh only when it has to run one.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["WATERMARK", "published_is_current"]

#: The ``telemetry.pipeline_state`` row holding the newest ``ingested_at`` folded
#: into the stored buckets.
WATERMARK = "buckets_watermark"


class _Reader(Protocol):
    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]: ...


def published_is_current(ch: _Reader) -> bool:
    """True when a refresh now would publish the same figures as the last one did.

    That is: every stored row is folded (none newer than the watermark), the
    last publication came after the watermark moved (a process stopped
    between the two left it behind), and it was in this hour (the window
    moves by the hour; within one, the same buckets give the same figures).
    `telemetry stats` right after `telemetry ingest` then reads instead of
    reading every bucket back to publish the same rows again.
    """
    rows = ch.query(
        "WITH (SELECT value FROM telemetry.pipeline_state FINAL WHERE name = {n:String}) AS w, "
        "parseDateTime64BestEffortOrNull(w, 3, 'UTC') AS mark, "
        "(SELECT max(as_of) FROM telemetry.model_stats_7d_versions) AS published "
        "SELECT isNotNull(mark) AND published >= mark "
        "AND toStartOfHour(published) = toStartOfHour(now64(3, 'UTC')) "
        "AND (SELECT count() FROM telemetry.requests WHERE ingested_at > mark) = 0",
        {"n": WATERMARK},
    )
    return bool(rows and rows[0][0])
