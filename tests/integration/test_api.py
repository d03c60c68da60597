"""The real API handler, given the events API Gateway sends (events/*.json), against AWS APIs."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from typing import Any

import boto3
import pytest

from longrun import config, models
from longrun.records import TaskStatus
from tests.conftest import ROOT, function_module
from tests.integration.conftest import Deployment
from tools import openapi

RESOURCE = "/device-management/script-execution"
STAGE = "/v1"


@cache
def _sample(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "events" / name).read_text()))


class Context:
    function_name = "api"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def call(
    method: str,
    path: str,
    body: Any = None,
    caller: str = "alice",
    query: dict[str, str] | None = None,
    raw: str | None = None,
    base: str = STAGE,
    identity: dict[str, str] | None = None,
    custom_domain: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """The API function's answer to a request, as API Gateway would send it: on the execute-api URL (``base`` is the
    stage, in requestContext.path only) or on a custom domain (``base`` is its base path mapping, in both paths),
    from an IAM user unless ``identity`` says else."""
    event = copy.deepcopy(_sample("api-submit.json" if method == "POST" else "api-describe.json"))
    resource, params = _resource(path)
    event.update(
        httpMethod=method,
        path=path,
        resource=resource,
        pathParameters=params,
        queryStringParameters=query,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        body=raw if raw is not None else (json.dumps(body) if body is not None else None),
    )
    event["requestContext"].update(path=f"{base}{path}", resourcePath=resource, httpMethod=method)
    if custom_domain:
        event["path"] = f"{base}{path}"
    for name, value in (headers or {}).items():
        event.setdefault("headers", {})[name] = value
        event.setdefault("multiValueHeaders", {})[name] = [value]
    event["requestContext"]["identity"].update(
        identity or {"caller": f"AIDA{caller.upper()}", "userArn": f"arn:aws:iam::123456789012:user/{caller}"}
    )
    response = function_module("api").handler(event, Context())
    text = response.get("body") or ""
    headers = {name: values[-1] for name, values in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    answered = json.loads(text) if text else None
    _as_documented(method, path, response["statusCode"], headers, answered)
    return response["statusCode"], headers, answered


@cache
def _contract() -> dict[str, Any]:
    return openapi.document()


def _as_documented(method: str, path: str, status: int, headers: dict[str, str], body: Any) -> None:
    """Every answer is one the OpenAPI document gives its operation: a status it lists, and a body its model (of
    longrun.models) reads and writes back the same, byte for byte once parsed."""
    paths = _contract()["paths"]
    template, _ = _resource(path)
    if template not in paths or method.lower() not in paths[template]:
        assert status == 404, (method, path, status)
        return
    responses = paths[template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, which its operation does not list"
    content = responses[str(status)].get("content") or {}
    if not content:
        assert body is None, (method, path, status, body)
        return
    ((media_type, described),) = content.items()
    assert headers.get("Content-Type") == media_type, (method, path, headers)
    model = getattr(models, described["schema"]["$ref"].rsplit("/", 1)[1])
    assert model.model_validate(body).model_dump(mode="json", by_alias=True) == body, (method, path, body)


def _resource(path: str) -> tuple[str, dict[str, str] | None]:
    """The API's resource a path is on (as API Gateway names it: its template), and its path parameters (as the path
    has them); a path on no resource is its own."""
    for template in {route.path for route in function_module("api").api.routes}:
        names = re.findall(r"\{(\w+)\}", template)
        pattern = re.sub(r"\\\{\w+\\\}", "([^/]+)", re.escape(template))
        matched = re.fullmatch(pattern, path)
        if matched:
            return template, dict(zip(names, matched.groups(), strict=True)) or None
    return path, None


def executions(deployed: Deployment) -> list[dict[str, Any]]:
    return boto3.client("stepfunctions").list_executions(stateMachineArn=deployed.state_machine_arn)["executions"]


def table_items(deployed: Deployment) -> list[dict[str, Any]]:
    return boto3.resource("dynamodb").Table(deployed.table).scan()["Items"]


def submit(**fields: Any) -> dict[str, Any]:
    body = {"device-ids": ["web-1", "web-2", 3], "script-url": "scripts/hello.sh", **fields}
    status, headers, task = call("POST", RESOURCE, body)
    assert status == 202, task
    assert headers["Location"] == f"{STAGE}{RESOURCE}/{task['id']}"
    assert headers["Retry-After"] == "1"
    return dict(task)


def test_submit_records_the_task_and_starts_its_execution(deployed: Deployment) -> None:
    task = submit(**{"timeout-seconds": 30, "max-concurrency": 2})
    assert task["status"] == "SUBMITTED"
    assert task["device-ids"] == ["web-1", "web-2", 3]
    assert (task["timeout-seconds"], task["max-concurrency"], task["percentage"]) == (30, 2, 0)
    assert task["createdAt"].endswith("Z")
    started = executions(deployed)
    assert [e["name"] for e in started] == [task["id"]]
    status, _, read = call("GET", f"{RESOURCE}/{task['id']}")
    assert status == 200 and read["id"] == task["id"] and read["deviceCounts"]["PENDING"] == 3


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        ("{not json", 400, None),
        (json.dumps({"device-ids": [], "script-url": "scripts/a.sh"}), 422, "body.device-ids"),
        (json.dumps({"device-ids": ["a", "a"], "script-url": "scripts/a.sh"}), 422, "body.device-ids"),
        (json.dumps({"device-ids": [{"x": 1}], "script-url": "scripts/a.sh"}), 422, "body.device-ids.0"),
        (json.dumps({"device-ids": ["a"]}), 422, "body.script-url"),
        (json.dumps({"device-ids": ["a"], "script-url": "s3://someone-elses/scripts/a.sh"}), 422, "body.script-url"),
        (json.dumps({"device-ids": ["a"], "script-url": "output/x.sh"}), 422, "body.script-url"),
        (json.dumps({"device-ids": ["a"], "script-url": "scripts/a.sh", "timeout-seconds": "9"}), 422, None),
        (json.dumps(["a"]), 422, None),
    ],
)
def test_bad_input_is_a_problem_and_writes_nothing(
    deployed: Deployment, raw: str, status: int, field: str | None
) -> None:
    code, headers, problem = call("POST", RESOURCE, raw=raw)
    assert code == status
    assert headers["Content-Type"] == "application/problem+json"
    assert problem["status"] == status and problem["title"]
    if field:
        assert any(error["field"].startswith(field) for error in problem["errors"]), problem
    assert table_items(deployed) == []
    assert executions(deployed) == []


def test_unknown_and_foreign_tasks_are_not_found(deployed: Deployment) -> None:
    task = submit()
    for path in (f"{RESOURCE}/{task['id']}", f"{RESOURCE}/{task['id']}/result"):
        code, headers, problem = call("GET", path, caller="mallory")
        assert (code, headers["Content-Type"], problem["status"]) == (404, "application/problem+json", 404)
    code, _, _ = call("DELETE", f"{RESOURCE}/{task['id']}", caller="mallory")
    assert code == 404
    code, _, _ = call("GET", f"{RESOURCE}/00000000-0000-4000-8000-000000000000")
    assert code == 404
    for malformed in ("not-a-task-id", task["id"].upper(), "x" * 3000, "%00"):
        for method, path in (("GET", ""), ("GET", "/result"), ("GET", "/devices"), ("DELETE", "")):
            code, headers, problem = call(method, f"{RESOURCE}/{malformed}{path}")
            assert (code, headers["Content-Type"]) == (404, "application/problem+json"), (method, path, problem)


def test_input_that_once_crashed_the_handler_is_a_clear_problem(deployed: Deployment) -> None:
    """Each of these answered 502 (the handler crashed): now a 4xx problem, and nothing is written."""
    before = table_items(deployed)
    for too_large in (10**38, 2**53):  # 39 digits crashed it; beyond 2**53 - 1 a JSON number is not exact everywhere
        code, _, problem = call("POST", RESOURCE, {"device-ids": [too_large], "script-url": "scripts/hello.sh"})
        assert code == 422 and problem["errors"][0]["field"].startswith("body.device-ids.0")
    code, _, problem = call("POST", RESOURCE, raw="[" * 100_000)
    assert (code, problem["status"]) == (400, 400)
    assert table_items(deployed) == before
    accepted = submit(**{"device-ids": [2**53 - 1, "1" * 38]})  # the largest exact integer; longer ones as strings
    task = submit()
    call("DELETE", f"{RESOURCE}/{task['id']}")
    for token in ("²", "٣", "1" * 40, "-1", " 1"):
        code, _, problem = call("GET", f"{RESOURCE}/{task['id']}/result", query={"next-token": token})
        assert (code, problem["status"]) == (400, 400), token
    assert accepted["device-ids"] == [2**53 - 1, "1" * 38]


@pytest.mark.parametrize(
    "script_url", ["scripts/a b.sh", "scripts/a?.sh", "scripts/a\x00.sh", "scripts/%2e%2e/x.sh", "scripts/é.sh"]
)
def test_a_script_key_outside_the_allowed_characters_is_refused_at_submit(
    deployed: Deployment, script_url: str
) -> None:
    code, _, problem = call("POST", RESOURCE, {"device-ids": ["web-1"], "script-url": script_url})
    assert code == 422 and problem["errors"][0]["field"] == "body.script-url"
    assert executions(deployed) == []


def test_result_is_a_conflict_until_the_task_finishes(deployed: Deployment) -> None:
    task = submit()
    code, _, problem = call("GET", f"{RESOURCE}/{task['id']}/result")
    assert code == 409 and "SUBMITTED" in problem["detail"]


def test_cancel_is_idempotent_and_stops_the_execution(deployed: Deployment) -> None:
    task = submit()
    first = call("DELETE", f"{RESOURCE}/{task['id']}")
    again = call("DELETE", f"{RESOURCE}/{task['id']}")
    assert first[0] == again[0] == 200  # nothing was running: cancelled at once
    assert first[2]["status"] == again[2]["status"] == "CANCELLED"
    assert first[2]["updatedAt"] == again[2]["updatedAt"]
    assert "Retry-After" not in first[1]
    assert first[2]["deviceCounts"]["NOT_STARTED"] == 3
    assert executions(deployed)[0]["status"] in ("ABORTED", "FAILED")  # moto ends stopped Map runs as FAILED
    code, _, result = call("GET", f"{RESOURCE}/{task['id']}/result")
    assert code == 200 and {d["status"] for d in result["devices"]} == {"NOT_STARTED"}


def test_a_finished_task_cannot_be_cancelled(deployed: Deployment) -> None:
    task = submit()
    deployed.store.change_status(task["id"], TaskStatus.FAILED, [TaskStatus.SUBMITTED], reason="test")
    code, _, problem = call("DELETE", f"{RESOURCE}/{task['id']}")
    assert code == 409 and problem["status"] == 409
    assert deployed.store.get_task(task["id"]).status is TaskStatus.FAILED  # type: ignore[union-attr]


def test_listing_pages_through_the_callers_tasks(deployed: Deployment) -> None:
    ids = [submit()["id"] for _ in range(5)]
    call("POST", RESOURCE, {"device-ids": ["x"], "script-url": "scripts/a.sh"}, caller="bob")
    seen: list[str] = []
    query: dict[str, str] = {"limit": "2"}
    while True:
        code, _, page = call("GET", RESOURCE, query=query)
        assert code == 200 and len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if "next-token" not in page:
            break
        query = {"limit": "2", "next-token": page["next-token"]}
    assert seen == list(reversed(ids))
    code, _, page = call("GET", RESOURCE, query={"status": "CANCELLED"})
    assert code == 200 and page["items"] == []
    code, _, problem = call("GET", RESOURCE, query={"status": "DONE"})
    assert code == 422 and problem["errors"][0]["field"] == "query.status"
    code, _, problem = call("GET", RESOURCE, query={"next-token": "garbage"})
    assert code == 400


def test_links_resolve_on_the_url_the_client_used(deployed: Deployment) -> None:
    body = {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}
    for base, custom_domain in ((STAGE, False), ("/fleet/ops", True), ("", True)):
        code, headers, task = call("POST", RESOURCE, body, base=base, custom_domain=custom_domain)
        assert code == 202, task
        assert headers["Location"] == task["href"] == f"{base}{RESOURCE}/{task['id']}"
        code, _, read = call("GET", f"{RESOURCE}/{task['id']}", base=base, custom_domain=custom_domain)
        assert code == 200 and read["href"] == f"{base}{RESOURCE}/{task['id']}"
        code, _, page = call("GET", RESOURCE, query={"limit": "1"}, base=base, custom_domain=custom_domain)
        assert page["items"][0]["href"] == f"{base}{RESOURCE}/{task['id']}"


def assumed_role(role: str, role_id: str, session: str) -> dict[str, str]:
    """requestContext.identity of a request signed with an assumed role's session credentials."""
    return {"caller": f"{role_id}:{session}", "userArn": f"arn:aws:sts::123456789012:assumed-role/{role}/{session}"}


SSO_ROLE = ("AWSReservedSSO_FleetOperator_0123456789abcdef", "AROAEXAMPLESSOROLE001")


def test_a_person_keeps_their_tasks_across_sessions_and_never_shares_them(deployed: Deployment) -> None:
    alice = assumed_role(*SSO_ROLE, "alice@example.com")
    code, _, task = call("POST", RESOURCE, {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}, identity=alice)
    assert code == 202
    tomorrow = assumed_role(*SSO_ROLE, "alice@example.com")  # a new session: new credentials, same person
    assert call("GET", f"{RESOURCE}/{task['id']}", identity=tomorrow)[0] == 200
    bob = assumed_role(*SSO_ROLE, "bob@example.com")
    assert call("GET", f"{RESOURCE}/{task['id']}", identity=bob)[0] == 404
    # The role deleted and created again under the same name is another principal (another unique id)
    again = assumed_role(SSO_ROLE[0], "AROAEXAMPLESSOROLE002", "alice@example.com")
    assert call("GET", f"{RESOURCE}/{task['id']}", identity=again)[0] == 404
    task_record = deployed.store.get_task(task["id"])
    assert task_record is not None and task_record.owner == alice["userArn"]


def test_owner_scope_role_lets_every_session_of_a_role_share_its_tasks(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OWNER_SCOPE", "role")
    config.settings.cache_clear()
    role = ("deploy-pipeline", "AROAEXAMPLEPIPELINE01")
    body = {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}
    code, _, task = call("POST", RESOURCE, body, identity=assumed_role(*role, "botocore-session-1764222000"))
    assert code == 202
    assert (
        call("GET", f"{RESOURCE}/{task['id']}", identity=assumed_role(*role, "botocore-session-1764229999"))[0] == 200
    )
    assert call("GET", f"{RESOURCE}/{task['id']}", identity=assumed_role("other", "AROAOTHER", "x"))[0] == 404
    user = {"caller": "AIDAEXAMPLEUSER", "userArn": "arn:aws:iam::123456789012:user/carol"}
    assert call("GET", f"{RESOURCE}/{task['id']}", identity=user)[0] == 404


def test_every_field_error_comes_in_one_answer_at_the_field_the_api_names(deployed: Deployment) -> None:
    code, _, problem = call("POST", RESOURCE, {"device-ids": [], "script-url": "x.sh"})
    assert code == 422
    assert [error["field"] for error in problem["errors"]] == ["body.device-ids", "body.script-url"]
    body = {"device-ids": [1, "bad id!", 10**38], "script-url": "scripts/a b.sh", "timeout-seconds": 0}
    code, _, problem = call("POST", RESOURCE, body)
    assert code == 422
    assert [error["field"] for error in problem["errors"]] == [
        "body.device-ids.1",  # not body.device-ids.1.function-after[...] nor its integer member's type mismatch
        "body.device-ids.2",  # not body.device-ids.2.constrained-int
        "body.script-url",
        "body.timeout-seconds",
    ]
    assert executions(deployed) == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (RESOURCE, '{"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}'),
        ("/device-management/scripts", '{"sha256": "' + "0" * 64 + '", "size": 10}'),
        ("/device-management/webhooks", '{"url": "https://hooks.example.com/x"}'),
    ],
)
def test_a_body_that_is_not_json_is_refused_with_415(deployed: Deployment, path: str, body: str) -> None:
    forms = ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "multipart/form-data")
    for content_type in ("text/plain", *forms):  # a multipart form without a boundary crashed the handler
        code, headers, problem = call("POST", path, raw=body, headers={"content-type": content_type})
        assert (code, headers["Content-Type"], problem["status"]) == (415, "application/problem+json", 415)
    assert executions(deployed) == [] and table_items(deployed) == []
    if path == RESOURCE:
        code, _, _ = call("POST", path, raw=body, headers={"content-type": "application/json; charset=utf-8"})
        assert code == 202
