"""Gateway emission: the ``TelemetryEmitter`` library and the HTTP ingest service.

Embed: ``from collector import TelemetryEmitter`` (see docs/collector.md).
"""

from collector.auth import TokenAuth, hash_token
from collector.emitter import TelemetryEmitter
from collector.exceptions import BacklogFull, CollectorError, SpoolInUse, SpoolUnavailable
from collector.handoff import EmitterHandoff, Handoff, MemoryHandoff, Rejected
from collector.spool import Spool

__all__ = [
    "BacklogFull",
    "CollectorError",
    "EmitterHandoff",
    "Handoff",
    "MemoryHandoff",
    "Rejected",
    "Spool",
    "SpoolInUse",
    "SpoolUnavailable",
    "TelemetryEmitter",
    "TokenAuth",
    "hash_token",
]
