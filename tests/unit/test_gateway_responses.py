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


def test_the_stage_throttles_each_method_with_the_templates_limits() -> None:
    api = template.load(
        ROOT, "longrun", "us-east-1", {"ApiThrottlingRateLimit": "7", "ApiThrottlingBurstLimit": "11"}
    ).apis[0]
    throttle = api.throttle_of("/device-management/script-execution", "POST")
    assert throttle is not None and (throttle.rate, throttle.burst) == (7.0, 11)


def test_a_method_over_its_burst_and_rate_is_throttled_with_429_and_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from local_runtime import api_gateway

    now = [1000.0]
    monkeypatch.setattr(api_gateway.time, "monotonic", lambda: now[0])
    bucket = api_gateway.TokenBucket(template.Throttle(rate=2, burst=3))
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back at 2 a second
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 10  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    api = template.load(ROOT, "longrun", "us-east-1").apis[0]
    status, headers, body = gateway_response(api, GatewayError("THROTTLED", "Too Many Requests"), CONTEXT)
    assert (status, headers["Retry-After"], json.loads(body)["status"]) == (429, ["1"], 429)
