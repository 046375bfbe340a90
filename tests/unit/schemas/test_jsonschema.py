"""The checked-in JSON Schema is the one the model generates."""

from __future__ import annotations

import json

from schemas.jsonschema import SCHEMA_PATH, build_schema, render_schema


def test_checked_in_schema_is_current() -> None:
    on_disk = SCHEMA_PATH.read_text(encoding="utf-8")
    assert on_disk == render_schema(), (
        f"{SCHEMA_PATH.name} is stale: run `python -m schemas.jsonschema` and commit the result"
    )


def test_schema_names_every_contract_field_as_required() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema == build_schema()
    assert set(schema["required"]) == set(schema["properties"])
    assert schema["properties"]["ts"]["format"] == "date-time"
    assert len(schema["properties"]) == 16
