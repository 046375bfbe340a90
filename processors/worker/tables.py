"""The names of the worker's tables, without importing Faust.

``telemetry worker`` creates their changelog topics (``{app_id}-{name}-changelog``)
before Faust starts; ``app.py`` declares the tables under the same names.
"""

from __future__ import annotations

__all__ = ["BUCKETS", "CHANGELOG_TABLES", "SEEN", "changelog_topics"]

BUCKETS = "buckets"
SEEN = "seen"
CHANGELOG_TABLES: tuple[str, ...] = (BUCKETS, SEEN)


def changelog_topics(app_id: str) -> list[str]:
    """Faust's name for each table's changelog topic."""
    return [f"{app_id}-{name}-changelog" for name in CHANGELOG_TABLES]
