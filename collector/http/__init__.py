"""The HTTP ingest service: an aiohttp app around an injected ``Handoff``."""

from collector.http.app import DEFAULT_MAX_BODY, DEFAULT_MAX_DECOMPRESSED, IngestLimits, create_app
from collector.http.openapi import build_openapi

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_DECOMPRESSED",
    "IngestLimits",
    "build_openapi",
    "create_app",
]
