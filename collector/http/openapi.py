"""The OpenAPI 3.1 document of the ingest service, built from the code's own limits and
the event model. ``collector/openapi.json`` is its checked-in copy; a unit test fails
when the two differ. Regenerate with ``python -m collector.http.openapi``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from collector.http.body import ENCODINGS, MAX_ITEMS, MAX_REJECTS_KEPT
from schemas.event import RequestEvent

__all__ = ["CHECKED_IN", "build_openapi", "render"]

CHECKED_IN = Path(__file__).resolve().parents[1] / "openapi.json"
_DEFAULT_MAX_BODY = 8 * 1024 * 1024


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        out["headers"] = headers
    return out


def _otlp(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OTLP answer: a protobuf message, or its JSON form for a JSON request."""
    out: dict[str, Any] = {
        "description": description,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
    if headers:
        out["headers"] = headers
    return out


def build_openapi(max_body: int = _DEFAULT_MAX_BODY) -> dict[str, Any]:
    event_schema = RequestEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = event_schema.pop("$defs", {})
    content_encoding = {
        "name": "Content-Encoding",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "enum": list(ENCODINGS)},
    }
    retry_after = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telemetry ingest",
            "version": "1",
            "description": (
                "Request events from LLM gateway nodes. Each event is validated on its own: "
                "valid events are accepted even when others in the same batch are rejected. "
                "Rejected events go to the dead-letter topic with their reason. The answer is "
                "sent once accepted events are durable (in Kafka or in the collector's spool)."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **defs,
                "RequestEvent": event_schema,
                "IngestResult": {
                    "type": "object",
                    "required": ["accepted", "rejected", "rejected_count", "rejected_truncated"],
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 0},
                        "rejected": {
                            "type": "array",
                            "maxItems": MAX_REJECTS_KEPT,
                            "description": (
                                f"the first {MAX_REJECTS_KEPT} rejected events, in input "
                                "order; these are the ones dead-lettered"
                            ),
                            "items": {"$ref": "#/components/schemas/RejectedItem"},
                        },
                        "rejected_count": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "every rejected event, listed or not",
                        },
                        "rejected_truncated": {
                            "type": "boolean",
                            "description": "true when rejected_count is more than listed",
                        },
                    },
                },
                "RejectedItem": {
                    "type": "object",
                    "required": ["index", "field", "reason"],
                    "properties": {
                        "index": {
                            "type": "integer",
                            "description": (
                                "0-based position in the array, or among non-blank NDJSON lines"
                            ),
                        },
                        "line": {"type": "integer", "description": "1-based NDJSON line"},
                        "field": {"type": "string", "description": "'$' for the event itself"},
                        "reason": {"type": "string"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {
                "post": {
                    "operationId": "ingestEvents",
                    "summary": "Send a batch of request events",
                    "parameters": [content_encoding],
                    "requestBody": {
                        "required": True,
                        "description": f"at most {max_body} bytes as sent (and a bounded size "
                        f"once decompressed), at most {MAX_ITEMS} events (array items or "
                        "NDJSON lines)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/RequestEvent"},
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {"type": "string", "description": "one event per line"}
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "parsed; accepted events are durable; see 'rejected'",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/IngestResult"}
                                }
                            },
                        },
                        "400": _error("malformed body or corrupt encoding"),
                        "401": _error("missing or invalid bearer token"),
                        "413": _error(
                            "body (or its decompressed form) too large, or too many events"
                        ),
                        "415": _error("unsupported Content-Type or Content-Encoding"),
                        "429": _error("backlog past its bound", retry_after),
                        "503": _error("events cannot be stored right now", retry_after),
                    },
                }
            },
            "/v1/traces": {
                "post": {
                    "operationId": "ingestTraces",
                    "summary": "OTLP/HTTP trace export: each GenAI span becomes a request event",
                    "description": (
                        "OpenTelemetry Protocol over HTTP (traces). A span with "
                        "gen_ai.operation.name or gen_ai.request.model is mapped to a "
                        "request event (docs/collector.md, 'OpenTelemetry (OTLP) in') and "
                        "validated like one; other spans are ignored. Errors carry a "
                        "google.rpc.Status body, encoded like the request."
                    ),
                    "parameters": [content_encoding],
                    "requestBody": {
                        "required": True,
                        "description": f"an ExportTraceServiceRequest, at most {max_body} "
                        f"bytes as sent and at most {MAX_ITEMS} spans",
                        "content": {
                            "application/x-protobuf": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "description": "OTLP/JSON (hex trace and span ids)",
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _otlp(
                            "ExportTraceServiceResponse; partial_success counts the rejected "
                            f"spans (the first {MAX_REJECTS_KEPT} are dead-lettered)"
                        ),
                        "400": _otlp("google.rpc.Status: body cannot be decoded"),
                        "401": _otlp("google.rpc.Status: missing or invalid bearer token"),
                        "413": _otlp("google.rpc.Status: body too large, or too many spans"),
                        "415": _otlp("google.rpc.Status: unsupported Content-Type or encoding"),
                        "429": _otlp("google.rpc.Status: backlog past its bound", retry_after),
                        "503": _otlp("google.rpc.Status: cannot store events now", retry_after),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {"200": {"description": "the process answers"}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "security": [],
                    "responses": {
                        "200": {"description": "Kafka connected or spool writable"},
                        "503": {"description": "cannot take events now"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "security": [],
                    "responses": {"200": {"description": "Prometheus text exposition"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": {"description": "this document"}},
                }
            },
        },
    }


def render() -> str:
    return json.dumps(build_openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if CHECKED_IN.read_text() == render() else 1)
    CHECKED_IN.write_text(render())
