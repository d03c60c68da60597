"""The push functions' handlers, given the sample events of events/ (as their triggers send them), against AWS
APIs: a WebSocket connection and its subscription, a batch of the table's stream, a queued webhook delivery."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from longrun import config, services, subscriptions
from longrun.records import Owner
from longrun.store import owner_digest
from tests.conftest import ROOT, function_module, submission
from tests.integration.conftest import Deployment
from tests.integration.test_api import Context

TASK = "0b8d9c43-1111-4222-8333-944455556666"
ALICE = Owner(key="iam:AIDAEXAMPLEALICE00001", name="arn:aws:iam::123456789012:user/alice")


def sample(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "events" / name).read_text()))


@pytest.fixture
def push_env(deployed: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """The environment the push functions get from the template, with the bus and the queue it names."""
    for name in ("PublishEventsFunction", "WebSocketFunction", "DeliverWebhooksFunction"):
        for key, value in deployed.stack.functions[name].environment.items():
            monkeypatch.setenv(key, value)
    boto3.client("events").create_event_bus(
        Name=deployed.stack.functions["PublishEventsFunction"].environment["EVENT_BUS_NAME"]
    )
    queue = boto3.client("sqs").create_queue(QueueName="deliveries")["QueueUrl"]
    monkeypatch.setenv("WEBHOOK_DELIVERY_QUEUE_URL", queue)
    for cached in (config.settings, services.task_store, services.script_executions, services.publisher):
        cached.cache_clear()
    services.subscriptions.cache_clear()
    request = submission({"device-ids": ["web-1", "web-2", "db-1"], "script-url": "scripts/a.sh"})
    services.task_store().create_task(
        TASK, "script-execution", ALICE, request.settings, request.device_ids, "arn:aws:states:::execution:m:x"
    )
    return deployed


def test_a_websocket_connection_subscribes_to_its_callers_task(push_env: Deployment) -> None:
    websocket = function_module("websocket")
    connection = sample("websocket-connect.json")["requestContext"]["connectionId"]
    assert websocket.handler(sample("websocket-connect.json"), Context()) == {"statusCode": 200}
    assert services.task_store().connection_owner(connection) == owner_digest(ALICE.key)
    assert websocket.handler(sample("websocket-subscribe.json"), Context()) == {"statusCode": 200}
    assert services.task_store().subscribers(TASK) == [connection]
    task = services.task_store().get_task(TASK)
    assert task is not None and task.events_kept
    disconnect = sample("websocket-connect.json")
    disconnect["requestContext"] |= {"routeKey": "$disconnect", "eventType": "DISCONNECT"}
    websocket.handler(disconnect, Context())
    assert services.task_store().subscribers(TASK) == []


def test_a_connection_without_an_iam_caller_is_refused(push_env: Deployment) -> None:
    event = sample("websocket-connect.json")
    event["requestContext"]["identity"] = {"sourceIp": "127.0.0.1"}
    assert function_module("websocket").handler(event, Context()) == {"statusCode": 401}


def test_a_stream_batch_is_published_without_failures(push_env: Deployment) -> None:
    answer = function_module("publish_events").handler(sample("publish-events.json"), Context())
    assert answer == {"batchItemFailures": []}


def test_a_delivery_to_a_removed_endpoint_is_done_with(push_env: Deployment) -> None:
    answer = function_module("deliver_webhooks").handler(sample("deliver-webhooks.json"), Context())
    assert answer == {"batchItemFailures": []}


def _sent_to_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the WebSocket function sends its connections, in order, kept instead of posted."""
    sent: list[str] = []

    def send(store: Any, settings: Any, connection_id: str, messages: list[str]) -> bool:
        sent.extend(messages)
        return True

    monkeypatch.setattr(subscriptions, "send_to_connection", send)
    return sent


def test_a_subscription_aws_fails_midway_tells_the_client_to_subscribe_again(
    push_env: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the SDK's retries, a failed read after the subscription is written could leave the client without the
    events kept meanwhile: it is told to subscribe again (503), and gets no caught-up."""
    websocket = function_module("websocket")
    websocket.handler(sample("websocket-connect.json"), Context())
    sent = _sent_to_connections(monkeypatch)
    store = services.task_store()
    reads = {"count": 0}
    original = store.events_after

    def failing_second_read(task_id: str, after: int) -> list[str]:
        reads["count"] += 1
        if reads["count"] == 2:  # the read after the subscription is written
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "Query")
        return original(task_id, after)

    monkeypatch.setattr(store, "events_after", failing_second_read)
    assert websocket.handler(sample("websocket-subscribe.json"), Context()) == {"statusCode": 200}
    answers = [json.loads(message) for message in sent]
    assert answers[0]["type"] == "subscribed"
    assert answers[-1] == {
        "type": "error",
        "status": 503,
        "title": "Subscribe again",
        "detail": "subscribing did not complete; subscribe again, after the event id your last caught-up gave",
    }
    assert not any(answer["type"] == "caught-up" for answer in answers)


def test_events_kept_while_subscribing_come_before_caught_up_which_names_the_last(
    push_env: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event kept after the replay was read and before the subscription was written is not sent by the publisher
    (it read no subscriber) but by the subscription, before its caught-up; an event the publisher sends meanwhile can
    arrive first, so a client resumes after caught-up's id, not after the largest id it has seen."""
    websocket = function_module("websocket")
    websocket.handler(sample("websocket-connect.json"), Context())
    sent = _sent_to_connections(monkeypatch)
    store = services.task_store()
    original = store.subscribe

    def kept_meanwhile(connection_id: str, task_id: str, expires_at: Any) -> None:
        store.keep_event(task_id, 12, json.dumps({"id": 12, "type": "script-execution.progress"}))
        original(connection_id, task_id, expires_at)

    monkeypatch.setattr(store, "subscribe", kept_meanwhile)
    assert websocket.handler(sample("websocket-subscribe.json"), Context()) == {"statusCode": 200}  # after 0
    answers = [json.loads(message) for message in sent]
    assert [answer.get("type") for answer in answers] == ["subscribed", "script-execution.progress", "caught-up"]
    assert answers[-1] == {"type": "caught-up", "task-id": TASK, "after": 12}
