"""A retried submit never runs twice: simultaneous POSTs with one Idempotency-Key, over HTTP."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import RESOURCE, Reply, Service

pytestmark = pytest.mark.e2e
SIMULTANEOUS = 50


def test_fifty_simultaneous_posts_with_one_key_make_one_task(service: Service) -> None:
    """Each client repeats its POST as the answer says (409 in progress, or 503 when DynamoDB refused a write, which
    the local runtime makes happen to a share of writes) until it is accepted: all 50 end with the same task."""
    key = str(uuid.uuid4())
    body = {"device-ids": ["web-1", "web-2"], "script-url": "scripts/hello.sh"}
    before = {task["id"] for task in service.request("GET", f"{RESOURCE}?limit=100").body["items"]}
    ready = threading.Barrier(SIMULTANEOUS)

    def post(_: int) -> list[Reply]:
        ready.wait()
        replies = [service.request("POST", RESOURCE, body, **{"Idempotency-Key": key})]
        while replies[-1].status in (409, 503) and len(replies) < 10:
            assert replies[-1].headers["Content-Type"] == "application/problem+json"
            time.sleep(int(replies[-1].headers["Retry-After"]))
            replies.append(service.request("POST", RESOURCE, body, **{"Idempotency-Key": key}))
        return replies

    with ThreadPoolExecutor(SIMULTANEOUS) as pool:
        answers = list(pool.map(post, range(SIMULTANEOUS)))
    statuses = {reply.status for replies in answers for reply in replies}
    assert statuses <= {202, 409, 503}, [r.body for rs in answers for r in rs if r.status not in (202, 409, 503)]
    assert [replies[-1].status for replies in answers] == [202] * SIMULTANEOUS
    accepted = {replies[-1].body["id"] for replies in answers}
    assert len(accepted) == 1
    made = {task["id"] for task in service.request("GET", f"{RESOURCE}?limit=100").body["items"]} - before
    assert made == accepted
    assert service.wait(accepted.pop())["status"] == "COMPLETE"
