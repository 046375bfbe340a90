"""The JSON Schema of the request event, generated from the model.

``python -m schemas.jsonschema`` rewrites ``schemas/request_event.v1.schema.json``;
a test fails when the checked-in file is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.event import RequestEvent

__all__ = ["SCHEMA_PATH", "build_schema", "render_schema"]

SCHEMA_PATH = Path(__file__).with_name("request_event.v1.schema.json")


def build_schema() -> dict[str, Any]:
    schema = RequestEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "telemetry.requests.v1"
    schema["description"] = (
        "One request served by a gateway node (schema version 1). Unknown fields are "
        "ignored. Cross-field rules: error_type is null iff status is ok; "
        "ttft_ms <= latency_ms; cached_input_tokens <= input_tokens; ts no more than "
        "5 minutes in the future and no more than 30 days in the past. Durations are kept "
        "to the microsecond (rounded to 3 decimals of ms)."
    )
    schema["properties"]["ts"]["format"] = "date-time"
    return schema


def render_schema() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH.name}")
