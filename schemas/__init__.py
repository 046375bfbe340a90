"""The contract: the request event, its codecs, the ClickHouse DDL, settings, errors.

Imports nothing of ours; every other package imports from here.
"""

from schemas.codec import MAX_EVENT_BYTES, decode_event, encode_event, validate_event
from schemas.errors import ConfigError, InvalidEvent, OperationalError, TelemetryError
from schemas.event import RequestEvent
from schemas.settings import Settings

__all__ = [
    "MAX_EVENT_BYTES",
    "ConfigError",
    "InvalidEvent",
    "OperationalError",
    "RequestEvent",
    "Settings",
    "TelemetryError",
    "decode_event",
    "encode_event",
    "validate_event",
]
