"""The change feed end to end against moto: the table's stream records of a whole run become events on the bus
(received by an SQS queue behind a rule, as a client would subscribe), webhook deliveries for the owner's endpoints
only, and kept events a subscriber can resume from."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from longrun import config, lifecycle, services
from longrun.api_requests import NewWebhook
from longrun.errors import InvalidRequest
from longrun.links import Links
from longrun.records import TaskEventType, WebhookEndpoint
from longrun.store import owner_digest
from tests.integration.conftest import Deployment
from tests.integration.test_dynamodb_streams import streams_client
from tests.integration.test_store import caller, new_task, outcome, running_batch, task_id


def stream_records(table: str) -> list[dict[str, Any]]:
    """Every record of the table's stream so far, as Lambda hands them to the function."""
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = streams_client()
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records += streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    return [record | {"eventSourceARN": arn} for record in records]


def received(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    bodies = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in messages]
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


@pytest.fixture
def push(deployed: Deployment, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The publisher's environment, its bus and queue, and a client's queue behind a rule on the bus."""
    env = deployed.stack.functions["PublishEventsFunction"].environment
    events, sqs = boto3.client("events"), boto3.client("sqs")
    bus = env["EVENT_BUS_NAME"]
    events.create_event_bus(Name=bus)
    deliveries = sqs.create_queue(QueueName=f"{bus}-deliveries")["QueueUrl"]
    client_queue = sqs.create_queue(QueueName=f"{bus}-client")["QueueUrl"]
    client_arn = sqs.get_queue_attributes(QueueUrl=client_queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="mine", EventBusName=bus, EventPattern=json.dumps({"source": ["longrun"]}))
    events.put_targets(Rule="mine", EventBusName=bus, Targets=[{"Id": "q", "Arn": client_arn}])
    monkeypatch.setenv("API_URL", env["API_URL"])
    monkeypatch.setenv("EVENT_BUS_NAME", bus)
    monkeypatch.setenv("WEBHOOK_DELIVERY_QUEUE_URL", deliveries)
    monkeypatch.delenv("WEBSOCKET_CONNECTIONS_URL", raising=False)
    for cached in (config.settings, services.publisher, services.webhooks, services.task_store):
        cached.cache_clear()
    services.script_executions.cache_clear()
    return {"deliveries": deliveries, "client": client_queue, "api": env["API_URL"]}


def run_three_devices(deployed: Deployment) -> str:
    store = services.task_store()
    tid = task_id(7)
    new_task(store, tid, owner="alice")
    lifecycle.change_status(store, tid, lifecycle.TaskStatus.IN_PROGRESS)
    batch = running_batch(store, tid, 3)
    store.finish_device(batch, 0, outcome("mi-0"))
    store.finish_device(batch, 1, outcome("mi-1", lifecycle.DeviceStatus.FAILED))
    store.finish_device(batch, 2, outcome("mi-2"))
    lifecycle.finish(store, tid, lifecycle.TaskStatus.COMPLETE)
    return tid


def test_a_run_reaches_the_bus_and_the_owners_webhooks_in_order(deployed: Deployment, push: dict[str, str]) -> None:
    store = services.task_store()
    mine = WebhookEndpoint(
        id="w-mine",
        owner_key=owner_digest(caller("alice").key),
        url="https://hooks.example.com/in",
        events=list(TaskEventType),
        secret="whsec_x",
        created_at=datetime.now(UTC),
    )
    theirs = replace(mine, id="w-theirs", owner_key=owner_digest(caller("bob").key))
    store.add_webhook(mine)
    store.add_webhook(theirs)
    tid = run_three_devices(deployed)

    assert services.publisher().publish(stream_records(deployed.table)) is None

    on_bus = received(push["client"])
    assert {m["source"] for m in on_bus} == {"longrun"}
    assert {m["detail-type"] for m in on_bus} == {"Script Execution Status Change"}
    details = sorted((m["detail"] for m in on_bus), key=lambda d: d["id"])
    assert [(d["type"], d["data"]["status"]) for d in details if d["type"] != "script-execution.progress"] == [
        ("script-execution.status-changed", "SUBMITTED"),
        ("script-execution.status-changed", "IN_PROGRESS"),
        ("script-execution.status-changed", "COMPLETE"),
        ("script-execution.finished", "COMPLETE"),
    ]
    finished = details[-1]
    assert finished["result"]["success-on-devices"] == ["d0", "d2"]
    assert finished["result"]["failed-on-devices"] == ["d1"]
    assert finished["data"]["href"] == f"{push['api']}/device-management/script-execution/{tid}"
    assert finished["owner"] == caller("alice").name

    deliveries = received(push["deliveries"])
    assert {d["webhook-id"] for d in deliveries} == {"w-mine"}
    events = [json.loads(d["payload"]) for d in deliveries]
    progress = [e for e in events if e["type"] == "script-execution.progress"]
    outcomes = [device["device-id"] for e in progress for device in e["devices"]]
    assert sorted(outcomes) == ["d0", "d1", "d2"]  # each device's outcome once
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert len({d["id"] for d in deliveries}) == len(deliveries)  # a webhook-id per event

    kept = [json.loads(body) for body in store.events_after(tid, -1)]
    assert [e["type"] for e in kept] == [
        "script-execution.status-changed",
        "script-execution.status-changed",
        "script-execution.status-changed",
        "script-execution.finished",
    ]


def test_a_batch_delivered_again_keeps_its_event_ids(deployed: Deployment, push: dict[str, str]) -> None:
    run_three_devices(deployed)
    records = stream_records(deployed.table)
    services.publisher().publish(records)
    first = sorted(m["detail"]["id"] for m in received(push["client"]))
    services.publisher().publish(records[len(records) // 2 :])
    again = sorted(m["detail"]["id"] for m in received(push["client"]))
    assert set(again) <= set(first) | {max(again)} and again


def test_a_webhook_url_must_be_https_to_a_public_address(deployed: Deployment, push: dict[str, str]) -> None:
    urls = ("http://hooks.example.com/x", "https://127.0.0.1/x", "https://169.254.169.254/latest", "https://10.0.0.8/")
    for url in urls:
        with pytest.raises(InvalidRequest):
            services.webhooks().add(caller("alice"), NewWebhook(url=url, events=list(TaskEventType)), Links())
    assert services.task_store().list_webhooks(owner_digest(caller("alice").key), 10, None) == ([], None)
