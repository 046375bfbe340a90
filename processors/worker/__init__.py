"""The Faust worker: events in, hour buckets in changelogged tables, rolling stats out."""

from processors.worker.fold import DEDUP_WINDOW_S, FoldStats, Record, fold_records
from processors.worker.records import BucketRecord
from processors.worker.seen import Seen, SeenIds

__all__ = [
    "DEDUP_WINDOW_S",
    "BucketRecord",
    "FoldStats",
    "Record",
    "Seen",
    "SeenIds",
    "fold_records",
]
