"""The embedded pipeline: no broker, ClickHouse in-process, the same aggregation core."""

from processors.embedded.ingest import IngestReport, ingest_lines
from processors.embedded.refresh import RefreshReport, refresh

__all__ = ["IngestReport", "RefreshReport", "ingest_lines", "refresh"]
