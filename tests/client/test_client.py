"""The client against a fake API (httpx.MockTransport): signing, retries and backoff, problems as typed errors,
pages, presigned redirects, and following a task by polling."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from longrun_client import (
    Client,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    WaitTimeout,
)
from longrun_client import client as client_module
from longrun_client.models import TaskStatus

API = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"
TASK_ID = "0d1c2b3a-0000-4000-8000-000000000001"
Handler = Callable[[httpx.Request], httpx.Response]


def task_body(status: str = "IN_PROGRESS", **counts: int) -> dict[str, Any]:
    return {
        "id": TASK_ID,
        "script-url": "scripts/hello.sh",
        "timeout-seconds": 600,
        "max-concurrency": 50,
        "status": status,
        "percentage": 0,
        "currentStep": "Running the script",
        "deviceCounts": counts or {"RUNNING": 1},
        "createdAt": "2026-11-27T10:00:00.123Z",
        "updatedAt": "2026-11-27T10:00:01Z",
        "href": f"/v1/device-management/script-execution/{TASK_ID}",
        "device-ids": ["web-1"],
    }


WEBHOOK_BODY = {
    "id": "5f0e0000-0000-4000-8000-000000000001",
    "url": "https://hooks.example.com/x",
    "events": ["script-execution.finished"],
    "enabled": True,
    "createdAt": "2026-11-27T10:00:00Z",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "href": "/v1/device-management/webhooks/5f0e0000-0000-4000-8000-000000000001",
}


def problem(status: int, title: str, **fields: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, **fields}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    return slept


def make_client(handler: Handler, **options: Any) -> Client:
    return Client(API, transport=httpx.MockTransport(handler), **options)


def test_requests_are_signed_with_sigv4_for_execute_api_in_the_apis_region() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=task_body("SUBMITTED"))

    make_client(handler).submit(["web-1"], "scripts/hello.sh", idempotency_key="key-1")
    authorization = seen[0].headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "SignedHeaders=content-type;host;idempotency-key;x-amz-date" in authorization
    assert seen[0].headers["Idempotency-Key"] == "key-1"
    assert json.loads(seen[0].content) == {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}


def test_a_submit_without_a_key_gets_a_new_idempotency_key_each_time() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(202, json=task_body("SUBMITTED"))

    client = make_client(handler)
    client.submit(["web-1"], "scripts/hello.sh")
    client.submit(["web-1"], "scripts/hello.sh")
    assert len(set(keys)) == 2


def test_a_bearer_token_replaces_the_signature() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=task_body())

    make_client(handler, token="eyJ.token").get(TASK_ID)
    assert seen[0].headers["Authorization"] == "Bearer eyJ.token"
    assert "X-Amz-Date" not in seen[0].headers


def test_a_get_is_retried_after_503_honouring_retry_after(sleeps: list[float]) -> None:
    answers = iter([problem(503, "The task is busy"), httpx.Response(200, json=task_body())])
    answers_with_header = iter([7, None])

    def handler(request: httpx.Request) -> httpx.Response:
        response = next(answers)
        wait = next(answers_with_header)
        if wait:
            response.headers["Retry-After"] = str(wait)
        return response

    assert make_client(handler).get(TASK_ID).status is TaskStatus.IN_PROGRESS
    assert sleeps and sleeps[0] >= 7


def test_retries_are_bounded_and_end_in_the_problem(sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return problem(503, "Service Unavailable", detail="still busy")

    with pytest.raises(ServiceUnavailable, match="still busy"):
        make_client(handler, max_attempts=4).get(TASK_ID)
    assert calls == 4
    assert len(sleeps) == 3
    assert all(wait <= client_module.BACKOFF[1] for wait in sleeps)


def test_a_post_without_an_idempotency_key_is_not_retried_after_a_500_which_may_have_acted(
    sleeps: list[float],
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        assert "Idempotency-Key" not in request.headers
        return problem(500, "Internal Server Error")

    with pytest.raises(ServiceUnavailable):
        make_client(handler).rotate_webhook_secret("5f0e0000-0000-4000-8000-000000000001")
    assert calls == 1


def test_a_post_with_an_idempotency_key_is_repeated_after_a_500_and_while_in_progress(sleeps: list[float]) -> None:
    answers = iter(
        [
            problem(500, "Internal Server Error"),
            problem(409, "In progress", type="urn:longrun:problem:idempotency-key-in-progress"),
            httpx.Response(202, json=task_body("SUBMITTED")),
        ]
    )
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return next(answers)

    assert make_client(handler).submit(["web-1"], "scripts/hello.sh").id == TASK_ID
    assert len(keys) == 3 and len(set(keys)) == 1
    assert len(sleeps) == 2


def test_a_key_in_progress_is_waited_on_beyond_the_attempts_for_a_bounded_time(sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        in_progress = problem(409, "In progress", type="urn:longrun:problem:idempotency-key-in-progress")
        in_progress.headers["Retry-After"] = "1"
        return in_progress if calls <= 20 else httpx.Response(202, json=task_body("SUBMITTED"))

    assert make_client(handler, max_attempts=2).submit(["web-1"], "scripts/hello.sh").id == TASK_ID
    assert calls == 21
    calls = -1000
    with pytest.raises(Conflict):
        make_client(handler, max_attempts=2).submit(["web-1"], "scripts/hello.sh")
    assert sum(sleeps) >= 20 + client_module.KEY_IN_PROGRESS_WAIT


def test_a_409_of_another_kind_is_not_repeated(sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return problem(409, "Task is not in a state that allows this", type="urn:longrun:problem:task-state-conflict")

    with pytest.raises(Conflict):
        make_client(handler).submit(["web-1"], "scripts/hello.sh")
    assert calls == 1 and sleeps == []


def test_a_webhook_is_added_with_an_idempotency_key_kept_across_retries(sleeps: list[float]) -> None:
    answers = iter([problem(503, "Busy"), httpx.Response(201, json=WEBHOOK_BODY)])
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return next(answers)

    make_client(handler).add_webhook("https://hooks.example.com/x", idempotency_key="hook-1")
    assert keys == ["hook-1", "hook-1"]


def test_a_connection_that_cannot_be_made_is_retried_then_reported(sleeps: list[float]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ConnectionFailed, match="could not reach"):
        make_client(handler, max_attempts=3).get(TASK_ID)
    assert len(sleeps) == 2


def test_refusals_raise_typed_errors_carrying_the_problem() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            errors = [{"field": "body.device-ids", "message": "List should have at least 1 item"}]
            return problem(422, "Invalid request", detail="the request does not match", errors=errors)
        return problem(404, "Task not found", detail=f"no script-execution task {TASK_ID}")

    client = make_client(handler)
    with pytest.raises(NotFound) as missing:
        client.get(TASK_ID)
    assert missing.value.problem.detail == f"no script-execution task {TASK_ID}"
    with pytest.raises(InvalidRequest) as invalid:
        client.submit([], "scripts/hello.sh")
    assert "body.device-ids: List should have at least 1 item" in str(invalid.value)


def test_api_gateways_own_refusal_is_made_a_problem() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"message": "Missing Authentication Token"})

    with pytest.raises(Exception, match="Missing Authentication Token") as refused:
        make_client(handler).get(TASK_ID)
    assert type(refused.value).__name__ == "AuthenticationError"


def test_list_iterates_every_page() -> None:
    def summary(n: int) -> dict[str, Any]:
        return {
            "id": f"{n:08d}-0000-4000-8000-000000000000",
            "script-url": "scripts/hello.sh",
            "deviceCount": 1,
            "status": "COMPLETE",
            "createdAt": "2026-11-27T10:00:00Z",
            "href": "/v1/x",
        }

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("next-token")
        if token is None:
            return httpx.Response(200, json={"items": [summary(1), summary(2)], "next-token": "t2"})
        assert token == "t2"
        return httpx.Response(200, json={"items": [summary(3)]})

    assert [task.id[:8] for task in make_client(handler).list()] == ["00000001", "00000002", "00000003"]


def test_logs_follow_the_redirect_to_the_presigned_url_without_the_apis_credentials() -> None:
    seen: list[httpx.Request] = []
    presigned = "http://127.0.0.1:4566/bucket/output/x/stdout?X-Amz-Signature=abc"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "127.0.0.1":
            return httpx.Response(200, content=b"line 1\nline 2\n")
        if request.url.path.endswith("/stderr"):
            return httpx.Response(204)
        return httpx.Response(303, headers={"Location": presigned})

    client = make_client(handler)
    assert client.logs(TASK_ID, "web/1") == b"line 1\nline 2\n"
    assert seen[0].url.raw_path.endswith(b"/devices/web%2F1/stdout")
    assert "Authorization" not in seen[1].headers
    assert client.logs(TASK_ID, "web-1", "stderr") == b""


def test_following_by_polling_honours_retry_after_and_ends_when_finished(sleeps: list[float]) -> None:
    states: Iterator[tuple[str, dict[str, int]]] = iter(
        [("IN_PROGRESS", {"RUNNING": 2}), ("IN_PROGRESS", {"RUNNING": 2}), ("COMPLETE", {"SUCCESS": 2})]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        status, counts = next(states)
        return httpx.Response(200, json=task_body(status, **counts), headers={"Retry-After": "3"})

    changes = list(make_client(handler).follow(TASK_ID))
    assert [change.state.status for change in changes] == [TaskStatus.IN_PROGRESS, TaskStatus.COMPLETE]
    assert sleeps == [3.0, 3.0]


def test_wait_gives_up_at_its_timeout(sleeps: list[float]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=task_body(), headers={"Retry-After": "30"})

    with pytest.raises(WaitTimeout):
        make_client(handler).wait(TASK_ID, timeout=5)


def test_body_is_the_apis_json_exactly() -> None:
    body = task_body() | {"a-field-added-later": {"x": 1}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    assert make_client(handler).get(TASK_ID).body() == body
