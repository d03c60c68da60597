"""Who owns a request: the principal of the API's Lambda authorizer, else the IAM caller (longrun.callers)."""

from __future__ import annotations

from longrun.callers import owner_of
from longrun.records import Owner

USER = "AIDAEXAMPLEUSER"
USER_ARN = "arn:aws:iam::123456789012:user/alice"
SESSION = "AROAEXAMPLEROLE:ci-42"
SESSION_ARN = "arn:aws:sts::123456789012:assumed-role/deployer/ci-42"


def test_the_authorizers_principal_owns_the_request_named_by_its_context() -> None:
    authorizer = {"principalId": "5b1c-77", "name": "alice", "integrationLatency": 3}
    assert owner_of(authorizer, None, None, "session") == Owner(key="principal:5b1c-77", name="alice")
    assert owner_of({"principalId": "5b1c-77"}, None, None, "session") == Owner(key="principal:5b1c-77", name="5b1c-77")


def test_without_an_authorizer_the_iam_caller_owns_the_request() -> None:
    assert owner_of(None, USER, USER_ARN, "session") == Owner(key=f"iam:{USER}", name=USER_ARN)
    assert owner_of({}, USER, USER_ARN, "session") == Owner(key=f"iam:{USER}", name=USER_ARN)


def test_every_session_of_a_role_is_one_owner_with_the_role_scope() -> None:
    owner = owner_of(None, SESSION, SESSION_ARN, "role")
    assert owner == Owner(key="iam:AROAEXAMPLEROLE", name="arn:aws:sts::123456789012:assumed-role/deployer")
    assert owner_of(None, SESSION, SESSION_ARN, "session") == Owner(key=f"iam:{SESSION}", name=SESSION_ARN)


def test_a_request_with_neither_has_no_owner() -> None:
    assert owner_of({"principalId": ""}, None, None, "session") is None
