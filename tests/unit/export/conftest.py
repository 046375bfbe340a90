"""Rows as ``model_stats_7d`` gives them, for the pure export tests."""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_util import AS_OF, WINDOW_START, stats_row

__all__ = ["AS_OF", "WINDOW_START", "stats_row"]


@pytest.fixture
def make_row() -> Any:
    return stats_row
