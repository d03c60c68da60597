"""The data-access module against DynamoDB: key design, pagination and every conditional write."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from longrun.models import Batch, CommandOutcome, DeviceStatus, ScriptExecutionRequest, TaskStatus
from longrun.store import ConditionFailed, InvalidPageToken, TaskStore
from tests.integration.conftest import Deployment

ARN = "arn:aws:states:us-east-1:123456789012:execution:m:x"


def new_task(store: TaskStore, task_id: str, owner: str = "alice", devices: int = 3) -> None:
    request = ScriptExecutionRequest.model_validate(
        {"device-ids": [f"d{i}" for i in range(devices)], "script-url": "scripts/a.sh"}
    )
    store.create_task(task_id, "script-execution", owner, request, ARN)


def task_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_a_task_is_written_once_and_read_back(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    task = store.get_task(task_id(1))
    assert task is not None
    assert (task.status, task.owner, task.counts.PENDING, task.counts.total) == (TaskStatus.SUBMITTED, "alice", 3, 3)
    with pytest.raises(Exception, match="ConditionalCheckFailed"):
        new_task(store, task_id(1))


def test_listing_is_per_owner_newest_first_and_paginated(deployed: Deployment) -> None:
    store = deployed.store
    for n in range(5):
        new_task(store, task_id(n))
    new_task(store, task_id(9), owner="bob")
    page, token = store.list_tasks("alice", None, 2, None)
    seen = [t.id for t in page]
    while token:
        page, token = store.list_tasks("alice", None, 2, token)
        seen += [t.id for t in page]
    assert seen == [task_id(n) for n in reversed(range(5))]
    assert [t.id for t in store.list_tasks("bob", None, 10, None)[0]] == [task_id(9)]


def test_listing_by_status_follows_status_changes(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    new_task(store, task_id(2))
    store.change_status(task_id(2), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    assert [t.id for t in store.list_tasks("alice", TaskStatus.IN_PROGRESS, 10, None)[0]] == [task_id(2)]
    assert [t.id for t in store.list_tasks("alice", TaskStatus.SUBMITTED, 10, None)[0]] == [task_id(1)]


def test_a_page_token_of_another_listing_is_refused(deployed: Deployment) -> None:
    store = deployed.store
    for n in range(3):
        new_task(store, task_id(n), owner="bob")
    _, token = store.list_tasks("bob", None, 1, None)
    assert token
    with pytest.raises(InvalidPageToken):
        store.list_tasks("alice", None, 1, token)
    with pytest.raises(InvalidPageToken):
        store.list_tasks("bob", None, 1, "not-base64-json")


def test_status_changes_are_conditional(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    with pytest.raises(ConditionFailed):
        store.change_status(task_id(1), TaskStatus.COMPLETE, [TaskStatus.IN_PROGRESS])
    finished = store.change_status(task_id(1), TaskStatus.FAILED, [TaskStatus.SUBMITTED], reason="broke")
    assert finished.status is TaskStatus.FAILED and finished.completed_at is not None
    assert (finished.counts.PENDING, finished.counts.NOT_STARTED) == (0, 3)  # never-started devices are counted


def test_a_batch_starts_only_while_the_task_is_in_progress(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    batch = Batch(task_id=task_id(1), number=0, device_ids=["d0", "d1", "d2"], instances={"mi-1": "d0"}, task_token="t")
    with pytest.raises(ConditionFailed):
        store.start_batch(batch, running={"d0": "mi-1"}, unknown={"d1": "no node"})
    assert store.get_batch(task_id(1), 0) is None
    store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    store.start_batch(batch, running={"d0": "mi-1"}, unknown={"d1": "no node"})
    task = store.get_task(task_id(1))
    assert task is not None
    assert task.counts.model_dump() == {**task.counts.model_dump(), "PENDING": 1, "RUNNING": 1, "FAILED": 1}
    with pytest.raises(ConditionFailed):  # the same batch again changes nothing
        store.start_batch(batch, running={"d0": "mi-1"}, unknown={"d1": "no node"})


def outcome(node: str, status: DeviceStatus = DeviceStatus.SUCCESS) -> CommandOutcome:
    now = datetime.now(UTC)
    return CommandOutcome(
        command_id="c", instance_id=node, comment="", status=status, exit_code=0, started_at=now, ended_at=now
    )


def test_outcomes_count_once_and_add_up_under_concurrency(deployed: Deployment) -> None:
    store = deployed.store
    devices = 40
    new_task(store, task_id(1), devices=devices)
    store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    running = {f"d{i}": f"mi-{i}" for i in range(devices)}
    batch = Batch(
        task_id=task_id(1),
        number=0,
        device_ids=list(running),
        instances={node: device for device, node in running.items()},
        task_token="t",
    )
    store.start_batch(batch, running=dict(running), unknown={})
    results: list[bool] = []

    def report(device: str) -> None:
        status = DeviceStatus.FAILED if device.endswith("7") else DeviceStatus.SUCCESS
        results.append(store.finish_device(task_id(1), device, outcome(running[device], status)))

    # every device is reported twice, from eight threads at once
    threads = [threading.Thread(target=report, args=(d,)) for d in list(running) * 2]
    for chunk in range(0, len(threads), 8):
        for thread in threads[chunk : chunk + 8]:
            thread.start()
        for thread in threads[chunk : chunk + 8]:
            thread.join()
    assert results.count(True) == devices
    task = store.get_task(task_id(1), consistent=True)
    assert task is not None
    assert task.counts.total == devices
    assert (task.counts.RUNNING, task.counts.SUCCESS, task.counts.FAILED) == (0, 36, 4)
    runs = list(store.all_device_runs(task_id(1)))
    assert sum(r.status is DeviceStatus.SUCCESS for r in runs) == task.counts.SUCCESS


def test_the_done_set_of_a_batch_ignores_repeats(deployed: Deployment) -> None:
    store = deployed.store
    new_task(store, task_id(1))
    store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    batch = Batch(
        task_id=task_id(1), number=3, device_ids=["d0", "d1"], instances={"mi-0": "d0", "mi-1": "d1"}, task_token="t"
    )
    store.start_batch(batch, running={"d0": "mi-0", "d1": "mi-1"}, unknown={})
    assert not store.mark_batch_done(task_id(1), 3, ["mi-0"]).complete
    assert not store.mark_batch_done(task_id(1), 3, ["mi-0"]).complete
    assert store.mark_batch_done(task_id(1), 3, ["mi-1"]).complete
