"""Catalog exports: ``model_stats_7d`` → a static tree of JSON documents, pages and badges.

Pure parts (``display``, ``document``, ``badge``, ``charts``, ``html``,
``schedule``) know nothing of ClickHouse or the disk; ``tree`` publishes a
tree atomically, ``push`` sends documents to the catalog, and ``run`` wires
them to ClickHouse. See docs/exports.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from processors.export.display import STATS_TABLE_COLUMNS, stats_table_rows
    from processors.export.document import (
        DEFAULT_MAX_AGE,
        DEFAULT_MIN_SAMPLE,
        build_documents,
    )
    from processors.export.errors import ExportError, PushError, StaleStatsError
    from processors.export.run import ExportOptions, ExportReport, export_once

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MIN_SAMPLE",
    "STATS_TABLE_COLUMNS",
    "ExportError",
    "ExportOptions",
    "ExportReport",
    "PushError",
    "StaleStatsError",
    "build_documents",
    "export_once",
    "stats_table_rows",
]

#: Loaded on first use (PEP 562): `telemetry stats` uses ``display`` and
#: ``document`` only, not ``run`` and its HTTP client.
_HOME = {
    "STATS_TABLE_COLUMNS": "display",
    "stats_table_rows": "display",
    "DEFAULT_MAX_AGE": "document",
    "DEFAULT_MIN_SAMPLE": "document",
    "build_documents": "document",
    "ExportError": "errors",
    "PushError": "errors",
    "StaleStatsError": "errors",
    "ExportOptions": "run",
    "ExportReport": "run",
    "export_once": "run",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
