"""Catalog exports: ``model_stats_7d`` → a static tree of JSON documents, pages and badges.

Pure parts (``display``, ``document``, ``badge``, ``charts``, ``html``,
``schedule``) know nothing of ClickHouse or the disk; ``tree`` publishes a
tree atomically, ``push`` sends documents to the catalog, and ``run`` wires
them to ClickHouse. See docs/exports.md.
"""

from processors.export.display import STATS_TABLE_COLUMNS, stats_table_rows
from processors.export.document import DEFAULT_MAX_AGE, DEFAULT_MIN_SAMPLE, build_documents
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
