"""DynamoDB's transaction rules as the local runtime enforces them on moto (conflicts, injected conflicts, limits), and
the data-access module living with them: conflicts retried, each device counted once, 4 write units per device."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local_runtime import dynamodb, meter
from longrun import store as store_module
from longrun.records import DeviceStatus, Owner, TaskStatus
from longrun.store import WriteConflict
from tests.conftest import submission
from tests.integration.conftest import Deployment
from tests.integration.test_store import outcome, running_batch, task_id


@pytest.fixture(autouse=True)
def strict_defaults() -> Iterator[None]:
    yield
    dynamodb.configure()


def item(deployed: Deployment, sk: str, **extra: Any) -> dict[str, Any]:
    return {"TableName": deployed.table, "Item": {"PK": {"S": "P"}, "SK": {"S": sk}, **extra}}


def test_a_transaction_conflicts_with_one_in_flight_on_the_same_item(deployed: Deployment) -> None:
    client = boto3.client("dynamodb")
    dynamodb.configure(transaction_ms=300)
    holder = threading.Thread(
        target=client.transact_write_items, kwargs={"TransactItems": [{"Put": item(deployed, "X")}]}
    )
    holder.start()
    time.sleep(0.1)
    with pytest.raises(ClientError) as cancelled:
        client.transact_write_items(TransactItems=[{"Put": item(deployed, "Y")}, {"Put": item(deployed, "X")}])
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "TransactionConflict"]
    with pytest.raises(ClientError) as rejected:
        client.put_item(**item(deployed, "X"))
    assert rejected.value.response["Error"]["Code"] == "TransactionConflictException"
    client.put_item(**item(deployed, "Z"))  # another item is not held
    holder.join()
    client.put_item(**item(deployed, "X", v={"N": "2"}))  # nor is X once the transaction has committed
    assert "Y" not in str(client.scan(TableName=deployed.table)["Items"])  # the cancelled one wrote nothing


def test_conflicts_can_be_injected_whatever_the_timing(deployed: Deployment) -> None:
    client = boto3.client("dynamodb")
    dynamodb.configure(conflict_rate=1.0)
    with pytest.raises(ClientError, match="TransactionCanceledException"):
        client.transact_write_items(TransactItems=[{"Put": item(deployed, "X")}])
    with pytest.raises(ClientError, match="TransactionConflictException"):
        client.update_item(
            TableName=deployed.table,
            Key={"PK": {"S": "P"}, "SK": {"S": "X"}},
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"N": "1"}},
        )
    dynamodb.configure(conflict_rate=0.0)
    client.transact_write_items(TransactItems=[{"Put": item(deployed, "X")}])


def test_transaction_and_item_limits(deployed: Deployment) -> None:
    client = boto3.client("dynamodb")
    too_many = [{"Put": item(deployed, f"K{n}")} for n in range(101)]
    with pytest.raises(ClientError, match="less than or equal to 100"):
        client.transact_write_items(TransactItems=too_many)
    big = "x" * 350_000
    with pytest.raises(ClientError, match="4 MB"):
        client.transact_write_items(TransactItems=[{"Put": item(deployed, f"K{n}", v={"S": big})} for n in range(13)])
    with pytest.raises(ClientError, match="Item size has exceeded the maximum allowed size"):
        client.put_item(**item(deployed, "K", v={"S": "x" * 410_000}))
    with pytest.raises(ClientError, match="multiple operations on one item"):
        client.transact_write_items(TransactItems=[{"Put": item(deployed, "K")}, {"Put": item(deployed, "K")}])


def new_task(deployed: Deployment, devices: int, owner: Owner, script: str = "scripts/a.sh") -> str:
    request = submission({"device-ids": [f"d{i}" for i in range(devices)], "script-url": script})
    deployed.store.create_task(
        task_id(1), "script-execution", owner, request.settings, request.device_ids, "arn:aws:states:::execution:m:x"
    )
    deployed.store.change_status(task_id(1), TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    return task_id(1)


OWNER = Owner(key="iam:AIDAALICE", name="arn:aws:iam::123456789012:user/alice")


def test_conflicting_outcomes_are_retried_and_each_device_counted_once(deployed: Deployment) -> None:
    """Every device reported twice by eight writers at once (as eight execution environments of the events
    function would), with each transaction holding its items 5 ms and 30% of writes refused as conflicting."""
    devices = 40
    tid = new_task(deployed, devices, OWNER)
    batch = running_batch(deployed.store, tid, devices)
    dynamodb.configure(transaction_ms=5, conflict_rate=0.3, seed=7)

    def report(node: str) -> bool:
        return deployed.store.finish_device(batch, batch.nodes[node], outcome(node))

    with ThreadPoolExecutor(max_workers=8) as writers:
        recorded = list(writers.map(report, list(batch.nodes) * 2))
    assert recorded.count(True) == devices
    assert dynamodb.RULES.conflicts > 0
    task = deployed.store.get_task(tid)
    assert task is not None and (0, devices) == (task.counts.RUNNING, task.counts.SUCCESS)
    assert len(deployed.store.device_runs(tid, 0, devices)) == devices


def test_a_write_that_keeps_conflicting_gives_up_with_write_conflict(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "CONFLICT_BACKOFF", (0.001, 0.002))
    tid = new_task(deployed, 1, OWNER)
    dynamodb.configure(conflict_rate=1.0)
    with pytest.raises(WriteConflict):
        deployed.store.change_status(tid, TaskStatus.CANCELLING, [TaskStatus.IN_PROGRESS])
    dynamodb.configure()
    task = deployed.store.get_task(tid)
    assert task is not None and task.status is TaskStatus.IN_PROGRESS


def test_a_devices_outcome_costs_four_write_units_whatever_the_owner_and_script(deployed: Deployment) -> None:
    """The cost model prices each device at 4 write units: its record and the task's counts, under 1 KB each, in
    one transaction. The largest owner (a 2 KB ARN) and script (1,024 bytes) the API accepts must not change it."""
    owner = Owner(key="iam:AROA" + "R" * 17 + ":" + "s" * 64, name="arn:aws:iam::123456789012:user/" + "p" * 2_000)
    script = "scripts/" + "x" * (1024 - len("scripts/"))
    tid = new_task(deployed, 50, owner, script)
    deployed.store.change_status(tid, TaskStatus.IN_PROGRESS, [TaskStatus.IN_PROGRESS], reason="r" * 1_000)
    batch = running_batch(deployed.store, tid, 50)
    meter.install()
    for index in range(2):
        meter.reset()
        failed = replace(outcome(f"mi-{index}", DeviceStatus.FAILED), reason="why " * 200)
        assert deployed.store.finish_device(batch, index, failed)
        assert meter.snapshot()["dynamodb"]["writeUnits"] == 4
