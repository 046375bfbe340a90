"""The bearer token the ingest app's tests use, and its headers."""

from __future__ import annotations

__all__ = ["AUTH", "TOKEN"]

TOKEN = "gateway-secret-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
