"""The API contract is the OpenAPI document generated from the API's code; the committed copy must match it."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from local_runtime import template
from tests.conftest import ROOT
from tools.openapi import document


def test_the_committed_document_is_the_generated_one() -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == document(), "docs/openapi.json is stale: run `make openapi`"


def test_the_document_is_valid_openapi_with_every_route() -> None:
    spec = document()
    validate(spec)
    operations = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert operations == {
        ("/device-management/script-execution", "post"),
        ("/device-management/script-execution", "get"),
        ("/device-management/script-execution/{task_id}", "get"),
        ("/device-management/script-execution/{task_id}", "delete"),
        ("/device-management/script-execution/{task_id}/result", "get"),
    }
    for item in spec["paths"].values():
        for operation in item.values():
            problems = [r for code, r in operation["responses"].items() if code.startswith("4")]
            assert problems and all("application/problem+json" in r["content"] for r in problems)


def test_the_template_routes_every_operation_of_the_document_to_the_api_function() -> None:
    stack = template.load(ROOT, "longrun", "us-east-1")
    routes = {(route.path, route.method.lower()) for route in stack.apis[0].routes}
    operations = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert routes == operations
    assert {route.function for route in stack.apis[0].routes} == {"ApiFunction"}
