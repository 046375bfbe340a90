"""Rejected input into ``telemetry.rejected``: kept with its reason, never silently lost.

Kept is the redacted form of the input (``schemas.redact``): its contract
fields, never text beside them such as a ``prompt``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from processors.clickhouse import ClickHouse
from schemas.redact import redact_rejected

__all__ = ["MAX_RAW_KEPT", "Rejected", "write_rejected"]

#: Bytes of the redacted form kept per item; enough to debug an emitter, bounded against abuse.
MAX_RAW_KEPT = 16 * 1024
_COLUMNS = ("source", "location", "field", "reason", "raw")


@dataclass(frozen=True, slots=True)
class Rejected:
    source: str  # "ingest:FILE", "http", "kafka:topic/partition"
    location: str  # "line 12", "index 3", "offset 991"
    field: str
    reason: str
    raw: bytes

    def row(self) -> tuple[str, str, str, str, str]:
        """The table row; ``raw`` holds the input's redacted form, never the input."""
        raw = redact_rejected(self.raw)[:MAX_RAW_KEPT].decode("utf-8", "replace")
        return (self.source, self.location, self.field, self.reason, raw)


def write_rejected(ch: ClickHouse, items: Sequence[Rejected]) -> int:
    if not items:
        return 0
    rows = [r.row() for r in items]
    token = hashlib.sha256(repr([(r[0], r[1], r[4]) for r in rows]).encode()).hexdigest()
    return ch.insert("telemetry.rejected", rows, _COLUMNS, dedup_token=token)
