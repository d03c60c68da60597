"""The API contract is the OpenAPI document generated from the API's code; the committed copy must match it."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from local_runtime import template
from tests.conftest import ROOT
from tools import event_schema
from tools.openapi import document


def test_the_committed_document_is_the_generated_one() -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == document(), "docs/openapi.json is stale: run `make openapi`"


def test_the_committed_event_schema_is_the_generated_one() -> None:
    committed = json.loads((ROOT / "docs" / "task-event.schema.json").read_text())
    assert committed == event_schema.document(), "docs/task-event.schema.json is stale: run `make openapi`"


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
        ("/device-management/script-execution/{task_id}/events", "get"),
        ("/device-management/script-execution/{task_id}/devices", "get"),
        ("/device-management/script-execution/{task_id}/devices/{device_id}", "get"),
        ("/device-management/script-execution/{task_id}/devices/{device_id}/stdout", "get"),
        ("/device-management/script-execution/{task_id}/devices/{device_id}/stderr", "get"),
        ("/device-management/scripts", "post"),
        ("/device-management/webhooks", "post"),
        ("/device-management/webhooks", "get"),
        ("/device-management/webhooks/{webhook_id}", "get"),
        ("/device-management/webhooks/{webhook_id}", "delete"),
        ("/device-management/webhooks/{webhook_id}/test", "post"),
        ("/device-management/webhooks/{webhook_id}/rotate-secret", "post"),
        ("/device-management/webhooks/{webhook_id}/deliveries", "get"),
    }
    for item in spec["paths"].values():
        for operation in item.values():
            problems = [r for code, r in operation["responses"].items() if code.startswith("4") and code != "414"]
            assert problems and all("application/problem+json" in r["content"] for r in problems)
            assert "content" not in operation["responses"]["414"]  # AWS's edge answers it, not as a problem


def test_the_template_routes_every_operation_of_the_document_to_its_function() -> None:
    stack = template.load(ROOT, "longrun", "us-east-1")
    routes = {(route.path, route.method.lower()) for route in stack.apis[0].routes}
    operations = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert routes == operations
    functions = {(route.path, route.function, route.streamed) for route in stack.apis[0].routes}
    assert {function for _, function, _ in functions} == {"ApiFunction", "EventStreamFunction"}
    assert {(path, streamed) for path, function, streamed in functions if function == "EventStreamFunction"} == {
        ("/device-management/script-execution/{task_id}/events", True)
    }
