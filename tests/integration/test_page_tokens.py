"""Page tokens are opaque and tamper-evident: sealed with the template's Secrets Manager key, bound to the caller and
the query; a rotated key keeps the previous version's tokens for one rotation."""

from __future__ import annotations

import boto3
import pytest

from longrun import page_tokens
from tests.integration.conftest import Deployment
from tests.integration.test_api import RESOURCE, call

BODY = {"device-ids": ["web-1", "web-2", "web-3"], "script-url": "scripts/hello.sh"}


def _tasks(count: int) -> list[str]:
    ids = []
    for _ in range(count):
        status, _, task = call("POST", RESOURCE, BODY)
        assert status == 202
        ids.append(task["id"])
    return ids


def _first_page_token(**query: str) -> str:
    status, _, page = call("GET", RESOURCE, query={"limit": "1", **query})
    assert status == 200 and page["next-token"], page
    return str(page["next-token"])


def test_a_listing_token_reads_the_next_page_and_nothing_else(deployed: Deployment) -> None:
    made = _tasks(3)
    token = _first_page_token()
    assert token.startswith("v1.") and not token.split(".")[1].isdigit()
    status, _, page = call("GET", RESOURCE, query={"limit": "1", "next-token": token})
    assert status == 200 and len(page["items"]) == 1 and page["items"][0]["id"] in made
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for refused, caller, query in (
        (forged, "alice", {}),  # changed
        (token, "bob", {}),  # another caller
        (token, "alice", {"status": "SUBMITTED"}),  # another query
        ("v1.MTAw.AAAAAAAAAAAAAAAAAAAAAA", "alice", {}),  # made up
    ):
        status, _, problem = call("GET", RESOURCE, caller=caller, query={"limit": "1", "next-token": refused, **query})
        assert (status, problem["type"]) == (400, "urn:longrun:problem:bad-request"), (caller, query)


def test_a_result_token_is_bound_to_its_task(deployed: Deployment) -> None:
    first, second = _tasks(2)
    for task_id in (first, second):
        assert call("DELETE", f"{RESOURCE}/{task_id}")[0] == 200
    status, _, page = call("GET", f"{RESOURCE}/{first}/result", query={"limit": "1"})
    assert status == 200 and page["next-token"]
    assert call("GET", f"{RESOURCE}/{first}/result", query={"limit": "1", "next-token": page["next-token"]})[0] == 200
    status, _, _ = call("GET", f"{RESOURCE}/{second}/result", query={"limit": "1", "next-token": page["next-token"]})
    assert status == 400
    status, _, _ = call("GET", f"{RESOURCE}/{first}/devices", query={"limit": "1", "next-token": page["next-token"]})
    assert status == 400  # a result's token is not a devices token


def test_a_rotated_key_keeps_the_previous_versions_tokens_for_one_rotation(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(page_tokens, "KEY_CACHE_SECONDS", 0)  # read the key at each use
    (name, _), *_ = deployed.stack.secrets()
    secrets = boto3.client("secretsmanager")
    _tasks(2)
    token = _first_page_token()
    secrets.put_secret_value(SecretId=name, SecretString="k" * 64)  # rotated: the old key is now AWSPREVIOUS
    assert call("GET", RESOURCE, query={"limit": "1", "next-token": token})[0] == 200
    fresh = _first_page_token()
    assert fresh != token
    secrets.put_secret_value(SecretId=name, SecretString="m" * 64)  # again: the first key is gone
    assert call("GET", RESOURCE, query={"limit": "1", "next-token": token})[0] == 400
    assert call("GET", RESOURCE, query={"limit": "1", "next-token": fresh})[0] == 200
