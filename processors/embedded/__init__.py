"""The embedded pipeline: no broker, ClickHouse in-process, the same aggregation core.

The names below are loaded on first use (PEP 562): a command that needs one
small module of this package (`telemetry stats` asks whether the published
stats are current) does not pay for numpy, pyarrow and the validators.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from processors.embedded.ingest import IngestReport, ingest_lines
    from processors.embedded.refresh import Refresher, RefreshReport, refresh

__all__ = ["IngestReport", "RefreshReport", "Refresher", "ingest_lines", "refresh"]

_HOME = {
    "IngestReport": "processors.embedded.ingest",
    "ingest_lines": "processors.embedded.ingest",
    "RefreshReport": "processors.embedded.refresh",
    "Refresher": "processors.embedded.refresh",
    "refresh": "processors.embedded.refresh",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
