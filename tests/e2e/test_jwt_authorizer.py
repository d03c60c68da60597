"""ApiAuthorizer JWT: the REST API behind the template's JWT authorizer (JwtAuthorizerFunction, invoked by the local
gateway as API Gateway invokes a TOKEN authorizer), with an OpenID Connect issuer of the test's own whose discovery
document and keys are served on loopback; over HTTP, as a client calls it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from local_runtime.oidc_issuer import Issuer, new_key
from tests.e2e.conftest import RESOURCE, LocalRuntimeProcess, Reply, Service

AUDIENCE = "longrun-app"
OTHER_KEY = new_key()
BODY = {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(issuer: Issuer) -> Iterator[Service]:
    runtime = LocalRuntimeProcess.start(
        "--parameter", "ApiAuthorizer=JWT", "--parameter", f"JwtIssuer={issuer.url}",
        "--parameter", f"JwtAudience={AUDIENCE}",
    )  # fmt: skip
    try:
        yield runtime.service
    finally:
        runtime.stop()


def token(issuer: Issuer, subject: str, key: Any = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": issuer.url, "sub": subject, "aud": AUDIENCE, "iat": now, "exp": now + 300, "token_use": "id"}
    payload |= {"cognito:username": subject.split("-")[0]} | claims
    return issuer.sign({k: v for k, v in payload.items() if v is not None}, key)


def as_bearer(api: Service, method: str, path: str, bearer: str | None, body: Any = None) -> Reply:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    return api.request(method, path, body, **headers)


def test_a_bearer_of_a_valid_token_owns_what_it_makes_and_no_one_else_sees_it(api: Service, issuer: Issuer) -> None:
    alice, bob = token(issuer, "alice-1"), token(issuer, "bob-2")
    submitted = as_bearer(api, "POST", RESOURCE, alice, BODY)
    assert submitted.status == 202, submitted.body
    task = submitted.body["id"]
    assert as_bearer(api, "GET", f"{RESOURCE}/{task}", alice).status == 200
    listed = as_bearer(api, "GET", RESOURCE, alice)
    assert [item["id"] for item in listed.body["items"]] == [task]
    assert as_bearer(api, "GET", f"{RESOURCE}/{task}", bob).status == 404
    assert as_bearer(api, "GET", RESOURCE, bob).body["items"] == []
    while as_bearer(api, "GET", f"{RESOURCE}/{task}", alice).body["status"] not in ("COMPLETE", "FAILED"):
        time.sleep(0.2)
    events = _events(api, task, alice)
    assert events and {event.get("owner") for event in events if "task-id" in event} == {"alice"}  # its user name
    assert api.request("GET", f"{RESOURCE}/{task}/events", Authorization=f"Bearer {bob}").status == 404


def _events(api: Service, task: str, bearer: str) -> list[dict[str, Any]]:
    """The task's event stream (it has ended, so the stream replays its events and closes)."""
    headers = {"Authorization": f"Bearer {bearer}", "Accept": "text/event-stream"}
    request = urllib.request.Request(f"{api.api}{RESOURCE}/{task}/events", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as stream:
        text = stream.read().decode()
    return [json.loads(line.removeprefix("data:")) for line in text.splitlines() if line.startswith("data:")]


def test_an_access_token_for_the_client_is_taken_too(api: Service, issuer: Issuer) -> None:
    access = token(issuer, "carol-3", aud=None, client_id=AUDIENCE, token_use="access")
    assert as_bearer(api, "GET", RESOURCE, access).status == 200


@pytest.mark.parametrize(
    "made",
    [
        pytest.param(lambda issuer: None, id="no token"),
        pytest.param(lambda issuer: "not-a-token", id="not a JWT"),
        pytest.param(lambda issuer: token(issuer, "dave-4", exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda issuer: token(issuer, "dave-4", aud="another-app"), id="another audience"),
        pytest.param(lambda issuer: token(issuer, "dave-4", iss="https://elsewhere.example"), id="another issuer"),
        pytest.param(lambda issuer: token(issuer, "dave-4", key=OTHER_KEY), id="signed with another key"),
        pytest.param(lambda issuer: token(issuer, "dave-4", sub=None), id="no subject"),
        pytest.param(
            lambda issuer: jwt.encode(
                {"iss": issuer.url, "sub": "x", "aud": AUDIENCE}, "a-shared-secret-of-thirty-two-bytes!", "HS256"
            ),
            id="symmetric signature",
        ),
        pytest.param(
            lambda issuer: jwt.encode({"iss": issuer.url, "sub": "x", "aud": AUDIENCE}, None, "none"),
            id="unsigned",
        ),
    ],
)
def test_a_request_without_a_valid_token_is_refused_with_401_and_makes_nothing(
    api: Service, issuer: Issuer, made: Any
) -> None:
    reply = as_bearer(api, "POST", RESOURCE, made(issuer), BODY)
    assert reply.status == 401, reply.body
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.body["status"] == 401


def test_an_iam_signature_is_no_credential_with_the_jwt_authorizer(api: Service) -> None:
    reply = api.request("GET", RESOURCE, caller="local-operator")
    assert reply.status == 401, reply.body
