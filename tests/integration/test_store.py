"""The data-access module against DynamoDB: key design, pagination and every conditional write."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime

import pytest

from longrun.records import Batch, CommandOutcome, DeviceStatus, Owner, TaskStatus
from longrun.store import ConditionFailed, InvalidPageToken, TaskStore, owner_digest
from tests.conftest import submission
from tests.integration.conftest import Deployment

ARN = "arn:aws:states:us-east-1:123456789012:execution:m:x"


def new_task(store: TaskStore, task_id: str, owner: str = "alice", devices: int = 3) -> None:
    request = submission({"device-ids": [f"d{i}" for i in range(devices)], "script-url": "scripts/a.sh"})
    store.create_task(task_id, "script-execution", caller(owner), request.settings, request.device_ids, ARN)


def caller(name: str) -> Owner:
    return Owner(key=f"iam:AIDA{name.upper()}", name=f"arn:aws:iam::123456789012:user/{name}")


def task_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_a_task_is_written_once_and_read_back(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    task = store.get_task(task_id(1))
    assert task is not None
    assert (task.status, task.owner, task.counts.PENDING, task.counts.total) == (
        TaskStatus.SUBMITTED,
        "arn:aws:iam::123456789012:user/alice",
        3,
        3,
    )
    with pytest.raises(Exception, match="ConditionalCheckFailed"):
        new_task(store, task_id(1))


def test_listing_is_per_owner_newest_first_and_paginated(deployed: Deployment) -> None:
    store = deployed.store
    for n in range(5):
        new_task(store, task_id(n))
    new_task(store, task_id(9), owner="bob")
    page, token = store.list_tasks(caller("alice"), None, 2, None)
    seen = [t.id for t in page]
    while token:
        page, token = store.list_tasks(caller("alice"), None, 2, token)
        seen += [t.id for t in page]
    assert seen == [task_id(n) for n in reversed(range(5))]
    assert [t.id for t in store.list_tasks(caller("bob"), None, 10, None)[0]] == [task_id(9)]


def test_listing_by_status_follows_status_changes(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    new_task(store, task_id(2))
    store.change_status(task_id(2), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    assert [t.id for t in store.list_tasks(caller("alice"), TaskStatus.IN_PROGRESS, 10, None)[0]] == [task_id(2)]
    assert [t.id for t in store.list_tasks(caller("alice"), TaskStatus.SUBMITTED, 10, None)[0]] == [task_id(1)]


def test_a_page_token_of_another_listing_is_refused(deployed: Deployment) -> None:
    store = deployed.store
    for n in range(3):
        new_task(store, task_id(n), owner="bob")
    _, token = store.list_tasks(caller("bob"), None, 1, None)
    assert token
    with pytest.raises(InvalidPageToken):
        store.list_tasks(caller("alice"), None, 1, token)
    with pytest.raises(InvalidPageToken):
        store.list_tasks(caller("bob"), None, 1, "not-base64-json")


@pytest.mark.parametrize(
    "crafted",
    [
        [1, 2],
        {"PK": 1, "SK": 2, "GSI1PK": "<real>", "GSI1SK": 4},
        {"PK": {"S": "x"}, "SK": "y", "GSI1PK": "<real>", "GSI1SK": "w"},
        {"PK": "x", "SK": "y"},
        {"PK": "x", "SK": "y", "GSI1PK": "<real>", "GSI1SK": "w", "extra": "v"},
        {"PK": "x", "SK": "", "GSI1PK": "<real>", "GSI1SK": "w"},
        {"PK": "x", "SK": "y" * 3000, "GSI1PK": "<real>", "GSI1SK": "w"},
    ],
)
def test_a_crafted_page_token_is_refused_before_dynamodb_sees_it(deployed: Deployment, crafted: object) -> None:
    """Valid base64 of JSON that is not a key this listing ended at (its shape, its types, its attributes, its
    range): refused as a bad token, never sent to DynamoDB (which answered it with a ValidationException: a 502)."""
    store = deployed.store
    for n in range(2):
        new_task(store, task_id(n), owner="bob")
    _, token = store.list_tasks(caller("bob"), None, 1, None)
    assert token
    real = json.loads(base64.urlsafe_b64decode(token))
    if isinstance(crafted, dict):
        crafted = {name: real["GSI1PK"] if value == "<real>" else value for name, value in crafted.items()}
    with pytest.raises(InvalidPageToken):
        store.list_tasks(caller("bob"), None, 1, base64.urlsafe_b64encode(json.dumps(crafted).encode()).decode())
    outside = {"PK": f"OWNER#{owner_digest(caller('bob').key)}", "SK": "NOT-A-WEBHOOK"}
    with pytest.raises(InvalidPageToken):
        store.list_webhooks(
            owner_digest(caller("bob").key), 1, base64.urlsafe_b64encode(json.dumps(outside).encode()).decode()
        )


def test_status_changes_are_conditional(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    with pytest.raises(ConditionFailed):
        store.change_status(task_id(1), TaskStatus.COMPLETE, [TaskStatus.IN_PROGRESS])
    finished = store.change_status(task_id(1), TaskStatus.FAILED, [TaskStatus.SUBMITTED], reason="broke")
    assert finished.status is TaskStatus.FAILED and finished.completed_at is not None
    assert (finished.counts.PENDING, finished.counts.NOT_STARTED) == (0, 3)  # never-started devices are counted


def test_a_task_is_read_with_its_devices_in_one_query(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1), devices=2_345)
    found = store.get_task_with_devices(task_id(1))
    assert found is not None
    task, devices = found
    assert task.device_count == 2_345 and devices.ids == [f"d{i}" for i in range(2_345)]
    assert devices.outcomes is None
    assert store.device_ids(task_id(1), 1_950, 2_000) == [f"d{i}" for i in range(1_950, 2_000)]


def running_batch(store: TaskStore, tid: str, devices: int, number: int = 0) -> Batch:
    """A batch of the task's first devices, all handed to nodes mi-<index>."""
    ids = store.device_ids(tid, number * 50, number * 50 + devices)
    batch = Batch(
        task_id=tid,
        number=number,
        start=number * 50,
        device_ids=ids,
        nodes={f"mi-{number * 50 + i}": number * 50 + i for i in range(devices)},
        task_token="t",
    )
    store.start_batch(batch, failed={})
    return batch


def test_a_batch_starts_only_while_the_task_is_in_progress(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    batch = Batch(
        task_id=task_id(1), number=0, start=0, device_ids=["d0", "d1", "d2"], nodes={"mi-1": 0}, task_token="t"
    )
    with pytest.raises(ConditionFailed):
        store.start_batch(batch, failed={1: "no node"})
    assert store.get_batch(task_id(1), 0) is None
    store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    store.start_batch(batch, failed={1: "no node"})
    task = store.get_task(task_id(1))
    assert task is not None
    assert (task.counts.PENDING, task.counts.RUNNING, task.counts.FAILED) == (1, 1, 1)
    assert store.device_runs(task_id(1), 0, 3)[1].reason == "no node"
    with pytest.raises(ConditionFailed):  # the same batch again changes nothing
        store.start_batch(batch, failed={1: "no node"})


def outcome(node: str, status: DeviceStatus = DeviceStatus.SUCCESS) -> CommandOutcome:
    now = datetime.now(UTC)
    return CommandOutcome(
        command_id="c", node_id=node, comment="", status=status, exit_code=0, started_at=now, ended_at=now
    )


def test_outcomes_count_once_and_add_up_under_concurrency(deployed: Deployment) -> None:
    store = deployed.store
    devices = 40
    new_task(store, task_id(1), devices=devices)
    store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    batch = running_batch(store, task_id(1), devices)
    results: list[bool] = []

    def report(node: str) -> None:
        status = DeviceStatus.FAILED if node.endswith("7") else DeviceStatus.SUCCESS
        results.append(store.finish_device(batch, batch.nodes[node], outcome(node, status)))

    # every device is reported twice, from eight threads at once
    threads = [threading.Thread(target=report, args=(node,)) for node in list(batch.nodes) * 2]
    for chunk in range(0, len(threads), 8):
        for thread in threads[chunk : chunk + 8]:
            thread.start()
        for thread in threads[chunk : chunk + 8]:
            thread.join()
    assert results.count(True) == devices
    task = store.get_task(task_id(1))
    assert task is not None
    assert task.counts.total == devices
    assert (task.counts.RUNNING, task.counts.SUCCESS, task.counts.FAILED) == (0, 36, 4)
    runs = store.device_runs(task_id(1), 0, devices)
    assert sum(r.status is DeviceStatus.SUCCESS for r in runs.values()) == task.counts.SUCCESS
    assert runs[7].device_id == "d7" and runs[7].node_id == "mi-7" and runs[7].status is DeviceStatus.FAILED


def test_finishing_fixes_every_devices_outcome_beside_the_task(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1), devices=4)
    store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    batch = running_batch(store, task_id(1), 2)
    store.finish_device(batch, 0, outcome("mi-0"))
    store.finish_device(batch, 1, outcome("mi-1", DeviceStatus.TIMED_OUT))
    store.change_status(task_id(1), TaskStatus.COMPLETE, [TaskStatus.IN_PROGRESS], require_idle=True, outcomes="STNN")
    found = store.get_task_with_devices(task_id(1))
    assert found is not None
    task, devices = found
    assert devices.outcomes == "STNN"
    assert (task.counts.SUCCESS, task.counts.TIMED_OUT, task.counts.NOT_STARTED, task.counts.PENDING) == (1, 1, 2, 0)


def test_a_task_with_a_running_device_does_not_finish_idle(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1), devices=2)
    store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    running_batch(store, task_id(1), 1)
    with pytest.raises(ConditionFailed):
        store.change_status(task_id(1), TaskStatus.COMPLETE, [TaskStatus.IN_PROGRESS], require_idle=True)
