"""The local gateway's Lambda TOKEN authorizers: when the function is asked, and what its answer lets through."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from local_runtime.api_authorizers import Refusal, TokenAuthorizers
from local_runtime.lambdas import Invocation
from local_runtime.template import TokenAuthorizer

AUTHORIZER = TokenAuthorizer("JWT", "AuthorizerFunction", "Authorization", r"^Bearer \w+$", ttl_seconds=300)
API = "arn:aws:execute-api:us-east-1:123456789012:api1"
GET_TASKS = f"{API}/v1/GET/tasks"
POST_TASKS = f"{API}/v1/POST/tasks"


class Lambdas:
    """The functions as the gateway sees them: who may invoke them, and what the authorizer answers."""

    def __init__(self, answer: Invocation, permitted: bool = True) -> None:
        self.answer, self.permitted, self.events = answer, permitted, []  # type: list[dict[str, Any]]

    def permits(self, function: str, principal: str, source_arn: str) -> bool:
        assert (function, principal) == ("AuthorizerFunction", "apigateway.amazonaws.com")
        assert source_arn.startswith(f"{API}/authorizers/")
        return self.permitted

    def invoke(self, function: Any, event: dict[str, Any]) -> Invocation:
        self.events.append(event)
        return self.answer


def authorizers(lambdas: Lambdas) -> TokenAuthorizers:
    stack = SimpleNamespace(
        region="us-east-1", functions={"AuthorizerFunction": SimpleNamespace(logical_id="AuthorizerFunction")}
    )
    return TokenAuthorizers(cast(Any, stack), cast(Any, SimpleNamespace(id="api1")), cast(Any, lambdas))


def allowing(resource: str, effect: str = "Allow", **context: Any) -> Invocation:
    statement = {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    return Invocation({"principalId": "user-1", "policyDocument": policy, "context": context}, None)


def bearer(token: str = "abc") -> dict[str, list[str]]:
    return {"authorization": [f"Bearer {token}"]}


def test_an_allowed_token_passes_its_principal_and_context_and_is_asked_once() -> None:
    lambdas = Lambdas(allowing(f"{API}/v1/*", name="alice"))
    gateway = authorizers(lambdas)
    first = gateway.authorize(AUTHORIZER, GET_TASKS, bearer())
    again = gateway.authorize(AUTHORIZER, POST_TASKS, bearer())
    assert first["principalId"] == again["principalId"] == "user-1" and first["name"] == "alice"
    assert lambdas.events == [{"type": "TOKEN", "authorizationToken": "Bearer abc", "methodArn": GET_TASKS}]


@pytest.mark.parametrize("headers", [{}, {"authorization": ["Basic abc"]}, {"authorization": ["Bearer a.b"]}])
def test_a_missing_or_malformed_token_is_401_without_asking_the_function(headers: dict[str, list[str]]) -> None:
    lambdas = Lambdas(allowing("*"))
    assert authorizers(lambdas).authorize(AUTHORIZER, GET_TASKS, headers) == Refusal("UNAUTHORIZED", "Unauthorized")
    assert lambdas.events == []


def test_a_policy_kept_for_a_token_is_evaluated_again_for_each_method() -> None:
    gateway = authorizers(Lambdas(allowing(GET_TASKS)))
    assert gateway.authorize(AUTHORIZER, GET_TASKS, bearer())["principalId"] == "user-1"
    denied = gateway.authorize(AUTHORIZER, POST_TASKS, bearer())
    assert denied == Refusal("ACCESS_DENIED", "User is not authorized to access this resource")


def test_an_explicit_deny_wins() -> None:
    answer = allowing(f"{API}/*")
    answer.payload["policyDocument"]["Statement"].append(
        {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": f"{API}/v1/POST/*"}
    )
    refused = authorizers(Lambdas(answer)).authorize(AUTHORIZER, POST_TASKS, bearer())
    assert refused == Refusal("ACCESS_DENIED", "User is not authorized to access this resource with an explicit deny")


@pytest.mark.parametrize(
    ("answer", "permitted", "kind"),
    [
        (Invocation({"errorMessage": "Unauthorized", "errorType": "Exception"}, "Unhandled"), True, "UNAUTHORIZED"),
        (
            Invocation({"errorMessage": "boom", "errorType": "KeyError"}, "Unhandled"),
            True,
            "AUTHORIZER_CONFIGURATION_ERROR",
        ),
        (Invocation({"principalId": "user-1"}, None), True, "AUTHORIZER_CONFIGURATION_ERROR"),
        (
            Invocation({"principalId": "user-1", "policyDocument": {"Statement": [{}]}}, None),
            True,
            "AUTHORIZER_CONFIGURATION_ERROR",
        ),
        (allowing("*", nested={"not": "plain"}), True, "AUTHORIZER_CONFIGURATION_ERROR"),
        (allowing("*"), False, "AUTHORIZER_CONFIGURATION_ERROR"),
    ],
    ids=[
        "Unauthorized",
        "another error",
        "no policy",
        "a statement without effect",
        "a nested context",
        "no permission",
    ],
)
def test_what_api_gateway_answers_when_the_authorizer_does_not_allow(
    answer: Invocation, permitted: bool, kind: str
) -> None:
    refused = authorizers(Lambdas(answer, permitted)).authorize(AUTHORIZER, GET_TASKS, bearer())
    assert isinstance(refused, Refusal) and refused.kind == kind
