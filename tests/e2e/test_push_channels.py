"""The push channels on the local runtime, driven as clients drive them: a WebSocket subscriber, a webhook receiver
on loopback that verifies every signature, an SQS queue behind a rule on the event bus."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from websockets.sync.client import connect

from longrun.records import Owner
from longrun.store import TaskStore
from tests.e2e.conftest import BUCKET, RESOURCE, Service, sign_as

pytestmark = pytest.mark.e2e
WEBHOOKS = "/device-management/webhooks"
SLEEPY = "scripts/slow.sh"  # prints a line a second for SLOW_SECONDS (30 by default): cancelled at the end
THREE = ["web-1", "web-2", "db-1"]
OTHER_CALLER = "someone-else"


def events_until_finished(ws: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """Every message until the finished event and the subscription's caught-up, repeats (by event id) dropped as a
    client does: the subscription's own messages (subscribed, caught-up) first, then the events in id order."""
    seen: dict[int, dict[str, Any]] = {}
    others: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if "id" in message:
            seen.setdefault(message["id"], message)
        else:
            others.append(message)
        finished = any(event["type"] == "script-execution.finished" for event in seen.values())
        if finished and any(other["type"] == "caught-up" for other in others):
            return others + [seen[i] for i in sorted(seen)]


SETTLE_THEN_FAIL_ON_DB = b"""#!/bin/sh
# As fail-on-db.sh, two seconds later: the subscriber is there before the first device ends.
sleep 2
case "$DEVICE_ID" in db*) exit 3 ;; esac
"""


def test_a_websocket_subscriber_receives_each_status_change_the_progress_and_the_end(service: Service) -> None:
    key = "scripts/settle-then-fail-on-db.sh"
    service.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=SETTLE_THEN_FAIL_ON_DB)
    task = service.submit(**{"device-ids": THREE, "script-url": key})
    with connect(service.websocket_url) as ws:
        ws.send(json.dumps({"action": "subscribe", "task-id": task["id"], "after": 0}))
        messages = events_until_finished(ws)
    assert messages[0]["type"] == "subscribed" and messages[0]["data"]["id"] == task["id"]
    assert messages[1]["type"] == "caught-up" and messages[1]["task-id"] == task["id"]
    events = messages[2:]
    statuses = [e["data"]["status"] for e in events if e["type"] == "script-execution.status-changed"]
    assert statuses == ["SUBMITTED", "IN_PROGRESS", "COMPLETE"]
    outcomes = {
        d["device-id"]: d["status"] for e in events if e["type"] == "script-execution.progress" for d in e["devices"]
    }
    assert outcomes == {"web-1": "SUCCESS", "web-2": "SUCCESS", "db-1": "FAILED"}
    finished = events[-1]
    assert finished["result"]["success-on-devices"] == ["web-1", "web-2"]
    assert finished["result"]["failed-on-devices"] == ["db-1"]
    assert finished["data"]["href"] == service.api + f"{RESOURCE}/{task['id']}"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


def test_a_subscriber_that_reconnects_resumes_after_the_last_event_it_saw(service: Service) -> None:
    task = service.submit(**{"device-ids": THREE, "script-url": "scripts/hello.sh"})
    with connect(service.websocket_url) as ws:
        ws.send(json.dumps({"action": "subscribe", "task-id": task["id"], "after": 0}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        first = json.loads(ws.recv(timeout=10))
        while "id" not in first:  # caught-up, before any event was kept
            first = json.loads(ws.recv(timeout=10))
    service.wait(task["id"])
    with connect(service.websocket_url) as ws:
        ws.send(json.dumps({"action": "subscribe", "task-id": task["id"], "after": first["id"]}))
        rest = events_until_finished(ws)[2:]
    assert all(e["id"] > first["id"] for e in rest)
    assert [e["data"]["status"] for e in [first, *rest] if e["type"].endswith("status-changed")] == [
        "SUBMITTED",
        "IN_PROGRESS",
        "COMPLETE",
    ]


def test_subscribing_to_another_callers_task_answers_404(service: Service) -> None:
    task = service.submit()
    assert service.websocket_url is not None
    upgrade = sign_as(OTHER_CALLER, "GET", service.websocket_url.replace("ws://", "http://"), None, {})
    with connect(service.websocket_url, additional_headers=upgrade) as ws:
        ws.send(json.dumps({"action": "subscribe", "task-id": task["id"]}))
        answer = json.loads(ws.recv(timeout=10))
        ws.send("not json")
        invalid = json.loads(ws.recv(timeout=10))
    assert (answer["type"], answer["status"], answer["task-id"]) == ("error", 404, task["id"])
    assert (invalid["type"], invalid["status"]) == ("error", 400)


@dataclass
class Receiver:
    """A webhook endpoint on loopback that answers each delivery with the next of ``answers`` (then 204)."""

    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def deliveries(self, kind: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(headers, json.loads(body)) for headers, body in self.received if json.loads(body)["type"] == kind]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(found.answers.pop(0) if found.answers else 204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    found.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=found.server.serve_forever, daemon=True).start()
    yield found
    found.server.shutdown()


def wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "did not happen in time"
        time.sleep(0.1)


def test_a_webhook_receives_its_owners_events_each_signed_with_its_secret(service: Service, receiver: Receiver) -> None:
    made = service.request("POST", WEBHOOKS, {"url": receiver.url})
    assert made.status == 201 and made.body["secret"].startswith("whsec_")
    assert made.headers["Location"].endswith(made.body["id"])
    verifier = Verifier(made.body["secret"])
    try:
        theirs = service.request(
            "POST", RESOURCE, {"device-ids": ["web-2"], "script-url": "scripts/hello.sh"}, caller=OTHER_CALLER
        )
        task = service.submit(**{"device-ids": THREE, "script-url": "scripts/fail-on-db.sh"})

        def statuses() -> list[str]:  # deliveries run in parallel and arrive in any order: the event ids order them
            changes = sorted(receiver.deliveries("script-execution.status-changed"), key=lambda d: d[1]["id"])
            return [body["data"]["status"] for _, body in changes if body["task-id"] == task["id"]]

        def finished() -> bool:
            return any(body["task-id"] == task["id"] for _, body in receiver.deliveries("script-execution.finished"))

        wait_for(lambda: len(statuses()) == 3 and finished())
        assert statuses() == ["SUBMITTED", "IN_PROGRESS", "COMPLETE"]
        for headers, raw in receiver.received:
            verifier.verify(raw, headers)  # raises WebhookVerificationError unless signed with the secret
        tasks = {json.loads(raw)["task-id"] for _, raw in receiver.received}
        assert task["id"] in tasks and theirs.body["id"] not in tasks  # the caller's own tasks only
        assert service.request("GET", f"{WEBHOOKS}/{made.body['id']}", caller=OTHER_CALLER).status == 404
        assert "secret" not in service.request("GET", f"{WEBHOOKS}/{made.body['id']}").body
    finally:
        assert service.request("DELETE", f"{WEBHOOKS}/{made.body['id']}").status == 204


def test_a_failing_receiver_gets_the_delivery_on_the_third_attempt_and_the_log_shows_all_three(
    service: Service, receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    made = service.request("POST", WEBHOOKS, {"url": receiver.url, "events": ["script-execution.finished"]})
    try:
        ping = service.request("POST", f"{WEBHOOKS}/{made.body['id']}/test")
        assert ping.status == 202
        wait_for(lambda: len(receiver.received) >= 3)
        ids = {headers["webhook-id"] for headers, _ in receiver.received}
        assert ids == {ping.body["id"]}  # the same webhook-id on every attempt

        def logged() -> dict[str, Any] | None:
            page = service.request("GET", f"{WEBHOOKS}/{made.body['id']}/deliveries").body
            done = [d for d in page["items"] if d["id"] == ping.body["id"] and d["status"] == "SUCCEEDED"]
            return done[0] if done else None

        wait_for(lambda: logged() is not None)
        delivery = logged()
        assert delivery is not None
        assert [a.get("statusCode") for a in delivery["attempts"]] == [500, 503, 204]
    finally:
        service.request("DELETE", f"{WEBHOOKS}/{made.body['id']}")


def test_a_webhook_url_to_a_private_address_is_refused(service: Service) -> None:
    for url in ("https://169.254.169.254/latest/meta-data", "https://10.1.2.3/hook", "ftp://example.com/x"):
        reply = service.request("POST", WEBHOOKS, {"url": url})
        assert reply.status == 422 and reply.headers["Content-Type"] == "application/problem+json", reply.body


def test_an_sqs_queue_behind_a_rule_on_the_bus_receives_the_events(service: Service) -> None:
    sqs, events = service.aws("sqs"), service.aws("events")
    bus = "longrun-local-events"  # the stack's EventBusName output: ${AWS::StackName}-events
    queue = sqs.create_queue(QueueName="bus-subscriber")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-task-events", EventBusName=bus, EventPattern=json.dumps({"source": ["longrun"]}))
    events.put_targets(Rule="all-task-events", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    task = service.submit(**{"device-ids": THREE, "script-url": "scripts/hello.sh"})
    got: list[dict[str, Any]] = []

    def finished() -> bool:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            got.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return any(
            m["detail"]["type"] == "script-execution.finished" and m["detail"]["task-id"] == task["id"] for m in got
        )

    wait_for(finished)
    mine = sorted((m for m in got if m["detail"]["task-id"] == task["id"]), key=lambda m: m["detail"]["id"])
    assert {(m["source"], m["detail-type"]) for m in mine} == {("longrun", "Script Execution Status Change")}
    assert [m["detail"]["data"]["status"] for m in mine if m["detail"]["type"].endswith("status-changed")] == [
        "SUBMITTED",
        "IN_PROGRESS",
        "COMPLETE",
    ]


def test_after_a_rotation_deliveries_verify_with_the_new_secret_and_the_old_one(
    service: Service, receiver: Receiver
) -> None:
    made = service.request("POST", WEBHOOKS, {"url": receiver.url})
    try:
        rotated = service.request("POST", f"{WEBHOOKS}/{made.body['id']}/rotate-secret")
        assert rotated.status == 200 and rotated.body["secret"] not in (None, made.body["secret"])
        ping = service.request("POST", f"{WEBHOOKS}/{made.body['id']}/test")
        wait_for(lambda: any(headers["webhook-id"] == ping.body["id"] for headers, _ in receiver.received))
        headers, raw = next((h, r) for h, r in receiver.received if h["webhook-id"] == ping.body["id"])
        assert len(headers["webhook-signature"].split(" ")) == 2  # both secrets sign for a day
        for secret in (rotated.body["secret"], made.body["secret"]):
            assert Verifier(secret).verify(raw, headers)["type"] == "webhook.ping"
    finally:
        service.request("DELETE", f"{WEBHOOKS}/{made.body['id']}")


def test_a_receiver_answering_410_gone_disables_its_endpoint(service: Service, receiver: Receiver) -> None:
    receiver.answers = [410]
    made = service.request("POST", WEBHOOKS, {"url": receiver.url})
    try:
        service.request("POST", f"{WEBHOOKS}/{made.body['id']}/test")
        wait_for(lambda: not service.request("GET", f"{WEBHOOKS}/{made.body['id']}").body["enabled"])
        endpoint = service.request("GET", f"{WEBHOOKS}/{made.body['id']}").body
        assert endpoint["disabledReason"] == "the endpoint answered 410 Gone"
        listed = service.request("GET", f"{WEBHOOKS}/{made.body['id']}/deliveries").body["items"]
        assert [(d["status"], [a.get("statusCode") for a in d["attempts"]]) for d in listed] == [("FAILED", [410])]
    finally:
        service.request("DELETE", f"{WEBHOOKS}/{made.body['id']}")


def test_a_subscription_whose_connection_is_gone_is_forgotten_at_the_next_post(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API Gateway calls $disconnect at best effort: a subscription can outlive its connection. The publisher's post
    then answers GoneException, and the connection and its subscriptions are removed."""
    for name, value in {
        "AWS_ENDPOINT_URL": service.edge,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }.items():
        monkeypatch.setenv(name, value)
    store = TaskStore("longrun-local-TasksTable")
    key = "scripts/settle-then-fail-on-db.sh"
    service.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=SETTLE_THEN_FAIL_ON_DB)
    task = service.submit(**{"device-ids": ["web-1"], "script-url": key})
    gone = "Gone0nnectionId="  # a connection API Gateway no longer has, its $disconnect never delivered
    store.add_connection(gone, Owner(key="iam:someone", name="someone"), datetime.now(UTC) + timedelta(hours=1))
    store.subscribe(gone, task["id"], datetime.now(UTC) + timedelta(hours=1))
    service.wait(task["id"])
    wait_for(lambda: store.connection_owner(gone) is None)
    assert gone not in store.subscribers(task["id"])
