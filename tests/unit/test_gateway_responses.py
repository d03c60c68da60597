"""API Gateway's own errors (before the function), rendered from the deployed template's gateway responses as the
local API front renders them: each is a valid RFC 9457 problem, with the response's own HTTP status."""

from __future__ import annotations

import json

import pytest

from local_runtime import template
from local_runtime.api_gateway import DEFAULT_STATUS, GatewayError, gateway_response
from tests.conftest import ROOT

CONTEXT = {"path": "/v1/device-management/nope", "stage": "v1", "requestId": "r-1", "resourcePath": "/nope"}


@pytest.mark.parametrize("kind", sorted(DEFAULT_STATUS))
def test_every_response_type_is_a_valid_problem_with_its_status(kind: str) -> None:
    api = template.load(ROOT, "longrun", "us-east-1").apis[0]
    status, headers, body = gateway_response(api, GatewayError(kind, 'Say "no"'), CONTEXT)
    assert status == DEFAULT_STATUS[kind]
    assert headers["Content-Type"] == ["application/problem+json"]
    problem = json.loads(body)
    assert problem["title"] == 'Say "no"'
    assert problem["instance"] == CONTEXT["path"]
    assert problem.get("status", status) == status


@pytest.mark.parametrize(("status", "family"), [(418, "DEFAULT_4XX"), (502, "DEFAULT_5XX")])
def test_any_other_error_keeps_its_status_and_leaves_the_member_out(status: int, family: str) -> None:
    api = template.load(ROOT, "longrun", "us-east-1").apis[0]
    reply_status, _, body = gateway_response(api, GatewayError(family, "Internal server error", status), CONTEXT)
    assert reply_status == status
    assert "status" not in json.loads(body)
