"""The ingest app on a test server, with a token, in front of a MemoryHandoff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from ingest_util import TOKEN
from prometheus_client import CollectorRegistry

from collector.auth import TokenAuth, hash_token
from collector.handoff import MemoryHandoff
from collector.http.app import IngestLimits, create_app


@pytest.fixture
def handoff() -> MemoryHandoff:
    return MemoryHandoff()


@pytest.fixture
async def client(handoff: MemoryHandoff) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(
        handoff=handoff,
        auth=TokenAuth([hash_token(TOKEN)]),
        registry=CollectorRegistry(),
        limits=IngestLimits(max_body=64 * 1024, max_decompressed=256 * 1024),
    )
    async with TestClient(TestServer(app)) as c:
        yield c
