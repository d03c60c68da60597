"""The client's models are the API's contract: each has the fields, required fields and enum values that
docs/openapi.json (and, for pushed events, docs/task-event.schema.json) gives the schema of the same name."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from longrun_client import models

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPENAPI = json.loads((DOCS / "openapi.json").read_text())["components"]["schemas"]
EVENT_SCHEMA = json.loads((DOCS / "task-event.schema.json").read_text())
EVENTS = {**EVENT_SCHEMA.get("$defs", {}), EVENT_SCHEMA["title"]: EVENT_SCHEMA}
SERVER_ONLY = {"HTTPValidationError", "ValidationError", "ResponseValidationError"}
"""Schemas Powertools adds for its own validation errors; the API answers problems instead"""


def _client_model(name: str) -> Any:
    return getattr(models, name, None)


def _fields(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    return set(schema.get("properties", {})), set(schema.get("required", []))


@pytest.mark.parametrize("name", sorted(set(OPENAPI) - SERVER_ONLY))
def test_every_schema_of_the_api_has_a_client_model_with_its_fields(name: str) -> None:
    server = OPENAPI[name]
    client = _client_model(name)
    assert client is not None, f"longrun_client.models has no {name}"
    if "enum" in server:
        assert issubclass(client, StrEnum)
        assert {member.value for member in client} == set(server["enum"])
        return
    assert issubclass(client, BaseModel)
    assert _fields(client.model_json_schema(by_alias=True)) == _fields(server), name


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_schema_of_a_pushed_event_has_a_client_model_with_its_fields(name: str) -> None:
    server = EVENTS[name]
    client = _client_model(name)
    assert client is not None, f"longrun_client.models has no {name}"
    if "enum" in server:
        assert {member.value for member in client} == set(server["enum"])
        return
    assert _fields(client.model_json_schema(by_alias=True)) == _fields(server), name


def test_the_client_has_no_model_the_contract_does_not_know() -> None:
    known = set(OPENAPI) | set(EVENTS)
    defined = {
        name
        for name, value in vars(models).items()
        if isinstance(value, type)
        and not name.startswith("_")
        and value.__module__ == models.__name__
        and (issubclass(value, StrEnum) or (issubclass(value, BaseModel) and value is not models.ApiModel))
    }
    assert defined - known == set()
