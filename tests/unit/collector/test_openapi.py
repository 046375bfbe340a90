"""The checked-in OpenAPI document is current and covers every route."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from collector.handoff import MemoryHandoff
from collector.http.app import create_app
from collector.http.openapi import CHECKED_IN, build_openapi, render


def test_checked_in_document_is_current() -> None:
    assert CHECKED_IN.read_text() == render(), (
        "collector/openapi.json is stale: regenerate it with `python -m collector.http.openapi`"
    )


def test_every_route_is_documented() -> None:
    app = create_app(handoff=MemoryHandoff(), auth=None, registry=CollectorRegistry())
    doc = build_openapi()
    routes = {
        (r.resource.canonical, r.method.lower())
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented
