"""The aggregation core: pure functions over hour buckets, shared by every path."""

from processors.aggregate.bucket import HourBucket
from processors.aggregate.rolling import ALL_PROVIDERS, BucketKey, hourly_rows, rolling_rows
from processors.aggregate.sketch import RELATIVE_ACCURACY, QuantileSketch
from processors.aggregate.window import WINDOW_HOURS, hour_of, hour_start, in_window, window_start

__all__ = [
    "ALL_PROVIDERS",
    "RELATIVE_ACCURACY",
    "WINDOW_HOURS",
    "BucketKey",
    "HourBucket",
    "QuantileSketch",
    "hour_of",
    "hour_start",
    "hourly_rows",
    "in_window",
    "rolling_rows",
    "window_start",
]
