"""The embedded pipeline: no broker, ClickHouse in-process, the same aggregation core."""

from processors.embedded.ingest import IngestReport, ingest_lines
from processors.embedded.refresh import Refresher, RefreshReport, refresh

__all__ = ["IngestReport", "RefreshReport", "Refresher", "ingest_lines", "refresh"]
