"""Finished tasks expire (the table's TTL attribute, expiresAt): an expired task answers 404 on every route and
leaves the listings, whether or not TTL has deleted it yet (moto never does), and TTL's deletions push nothing."""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest

from longrun import store as store_module
from longrun.records import TaskStatus
from longrun.store import LONGEST_RUN, TaskStore
from tests.integration.conftest import Deployment
from tests.integration.test_api import RESOURCE, call, table_items

RETENTION = timedelta(days=90)  # the template's default TaskRetentionDays


def _finished_task(deployed: Deployment) -> str:
    status, _, task = call("POST", RESOURCE, {"device-ids": ["web-1", "web-2"], "script-url": "scripts/hello.sh"})
    assert status == 202
    assert call("DELETE", f"{RESOURCE}/{task['id']}")[0] == 200  # not started: cancelled at once, finished
    return str(task["id"])


def test_a_finished_tasks_records_expire_after_the_retention_window(deployed: Deployment) -> None:
    before = store_module._epoch(store_module.utc_now())
    task_id = _finished_task(deployed)
    items = {item["SK"]: item for item in table_items(deployed) if item["PK"] == f"TASK#{task_id}"}
    after = store_module._epoch(store_module.utc_now())
    window = RETENTION.total_seconds()
    for sk in ("TASK", "TASK#DETAIL"):  # rewritten when the task ended
        assert before + window <= items[sk]["expiresAt"] <= after + window, sk
    while_running = (LONGEST_RUN + RETENTION).total_seconds()
    for sk in [sk for sk in items if sk.startswith("TASK#IDS")]:  # written at the start, never rewritten
        assert before + while_running <= items[sk]["expiresAt"] <= after + while_running, sk


def test_an_expired_task_answers_404_everywhere_and_leaves_the_listing(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = _finished_task(deployed)
    kept = _finished_task(deployed)
    assert {item["id"] for item in call("GET", RESOURCE)[2]["items"]} == {task_id, kept}
    later = store_module.utc_now() + RETENTION + timedelta(seconds=1)
    monkeypatch.setattr(store_module, "utc_now", lambda: later)
    boto3.client("dynamodb").update_item(  # the other task ended later: it is still kept
        TableName=deployed.table,
        Key={"PK": {"S": f"TASK#{kept}"}, "SK": {"S": "TASK"}},
        UpdateExpression="SET expiresAt = :later",
        ExpressionAttributeValues={":later": {"N": str(store_module._epoch(later) + 3600)}},
    )
    for method, path in (
        ("GET", ""),
        ("GET", "/result"),
        ("GET", "/devices"),
        ("GET", "/devices/web-1"),
        ("DELETE", ""),
    ):
        status, _, problem = call(method, f"{RESOURCE}/{task_id}{path}")
        assert (status, problem["type"]) == (404, "urn:longrun:problem:task-not-found"), (method, path)
    assert call("GET", f"{RESOURCE}/{kept}")[0] == 200
    listed = {item["id"] for item in call("GET", RESOURCE)[2]["items"]}
    assert task_id not in listed
    assert {item["id"] for item in call("GET", RESOURCE, query={"status": TaskStatus.CANCELLED.value})[2]["items"]} <= {
        kept
    }


def test_ttls_deletions_reach_no_push_channel() -> None:
    """A TTL deletion is a REMOVE record in the table's stream, by the DynamoDB service: it changes no task."""
    removed = {
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {
            "Keys": {"PK": {"S": "TASK#t"}, "SK": {"S": "TASK"}},
            "OldImage": {
                "PK": {"S": "TASK#t"},
                "SK": {"S": "TASK"},
                "status": {"S": "COMPLETE"},
                "createdAt": {"S": "2026-01-01T00:00:00Z"},
                "counts": {"M": {"SUCCESS": {"N": "1"}}},
            },
            "SequenceNumber": "9",
        },
    }
    assert TaskStore.read_stream([removed]) == []
