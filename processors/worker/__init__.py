"""The Faust worker: events in, hour buckets in changelogged tables, rolling stats out."""

from processors.worker.fold import DEDUP_WINDOW_S, FoldStats, Message, fold_partition
from processors.worker.records import BucketRecord, SeenRecord

__all__ = [
    "DEDUP_WINDOW_S",
    "BucketRecord",
    "FoldStats",
    "Message",
    "SeenRecord",
    "fold_partition",
]
