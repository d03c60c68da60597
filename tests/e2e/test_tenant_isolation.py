"""Another caller gets 404 on every route of a task or a webhook endpoint it does not own, and changes nothing.
(The WebSocket subscription and the event stream have their own tests: test_push_channels, test_event_stream.)"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import RESOURCE, Service

pytestmark = pytest.mark.e2e
WEBHOOKS = "/device-management/webhooks"
OTHER = "mallory"


def test_every_route_of_a_task_answers_404_to_another_caller(service: Service) -> None:
    task = service.submit(**{"device-ids": ["web-1", "db-1"], "script-url": "scripts/fail-on-db.sh"})
    done = service.wait(task["id"])
    base = f"{RESOURCE}/{task['id']}"
    for method, path in (
        ("GET", base),
        ("GET", f"{base}/result"),
        ("GET", f"{base}/devices"),
        ("GET", f"{base}/devices?status=FAILED"),
        ("GET", f"{base}/devices/web-1"),
        ("GET", f"{base}/devices/web-1/stdout"),
        ("GET", f"{base}/devices/db-1/stderr"),
        ("GET", f"{base}/events"),
        ("DELETE", base),
    ):
        reply = service.request(method, path, caller=OTHER, Accept="application/json, text/event-stream")
        assert (reply.status, reply.body["type"]) == (404, "urn:longrun:problem:task-not-found"), (method, path)
    assert task["id"] not in {
        item["id"] for item in service.request("GET", f"{RESOURCE}?limit=100", caller=OTHER).body["items"]
    }
    assert service.request("GET", base).body["status"] == done["status"]  # the owner's task is as it was


def test_every_route_of_a_webhook_endpoint_answers_404_to_another_caller(service: Service) -> None:
    made = service.request("POST", WEBHOOKS, {"url": "http://127.0.0.1:9/hook"})
    assert made.status == 201
    base = f"{WEBHOOKS}/{made.body['id']}"
    for method, path in (
        ("GET", base),
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/test"),
        ("POST", f"{base}/rotate-secret"),
        ("DELETE", base),
    ):
        reply = service.request(method, path, caller=OTHER)
        assert (reply.status, reply.body["type"]) == (404, "urn:longrun:problem:webhook-not-found"), (method, path)
    listed = service.request("GET", f"{WEBHOOKS}?limit=100", caller=OTHER).body["items"]
    assert made.body["id"] not in {item["id"] for item in listed}
    mine = service.request("GET", base)
    assert mine.status == 200 and mine.body["id"] == made.body["id"]
    assert service.request("DELETE", base).status == 204
