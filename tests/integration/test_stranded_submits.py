"""No task is ever left SUBMITTED with nothing to start it: the API starts the execution before it records the task,
and an execution whose task never comes fails on its own within a bounded time."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from longrun import workflow as workflow_module
from longrun.workflow import TaskNotRecorded
from tests.conftest import ROOT
from tests.integration.conftest import Deployment
from tests.integration.test_api import RESOURCE, call, executions, table_items

BODY = {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}


class Crash(Exception):
    """The API function dying between two calls (a timeout, a lost environment)."""


def _asl() -> dict[str, Any]:
    return dict(json.loads((ROOT / "statemachine" / "script_execution.asl.json").read_text()))


def test_the_first_step_of_a_task_not_recorded_raises_after_a_short_wait(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(workflow_module.time, "sleep", slept.append)
    with pytest.raises(TaskNotRecorded):
        deployed.workflow.start_run("0d1c2b3a-0000-4000-8000-000000000001")
    assert slept == list(workflow_module.RECORD_WAITS)


def test_a_task_recorded_while_the_first_step_waits_is_started(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual race: the execution's first step runs before the API's write lands."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/hello.sh", Body=b"#!/bin/sh\necho hi\n")
    status, _, task = call("POST", RESOURCE, BODY)
    assert status == 202
    tables = boto3.client("dynamodb")
    items = tables.query(
        TableName=deployed.table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"TASK#{task['id']}"}},
    )["Items"]
    for item in items:
        tables.delete_item(TableName=deployed.table, Key={"PK": item["PK"], "SK": item["SK"]})

    def land(_: float) -> None:  # the write lands during the first wait
        for item in items:
            tables.put_item(TableName=deployed.table, Item=item)

    monkeypatch.setattr(workflow_module.time, "sleep", land)
    assert deployed.workflow.start_run(task["id"])["batches"] == [0]


def test_the_state_machine_retries_a_missing_task_longer_than_the_api_may_run_then_fails_alone(
    deployed: Deployment,
) -> None:
    start = _asl()["States"]["StartRun"]
    (retry,) = [rule for rule in start["Retry"] if rule["ErrorEquals"] == ["TaskNotRecorded"]]
    waited = sum(retry["IntervalSeconds"] * retry["BackoffRate"] ** n for n in range(retry["MaxAttempts"]))
    api_timeout = deployed.stack.functions["ApiFunction"].timeout
    assert waited > api_timeout, (waited, api_timeout)
    assert start["Catch"][0] == {"ErrorEquals": ["TaskNotRecorded"], "Next": "NeverRecorded"}
    assert _asl()["States"]["NeverRecorded"]["Type"] == "Fail"  # not FinishRun: there is no task to finish


def test_a_request_dying_after_the_execution_started_leaves_no_task(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_: Any, **__: Any) -> None:
        raise Crash("the function's environment was lost")

    monkeypatch.setattr(deployed.store, "create_task", crash)
    with pytest.raises(Crash):
        call("POST", RESOURCE, BODY)
    (started,) = executions(deployed)
    assert table_items(deployed) == []  # nothing SUBMITTED: the execution's first step fails it on its own
    described = boto3.client("stepfunctions").describe_execution(executionArn=started["executionArn"])
    assert described["status"] in ("ABORTED", "FAILED", "RUNNING")  # stopped when the request could still do so


def test_a_workflow_that_cannot_start_records_nothing(deployed: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_MACHINE_ARN", deployed.state_machine_arn + "-missing")
    from longrun import config, services

    config.settings.cache_clear()
    services.script_executions.cache_clear()
    status, _, problem = call("POST", RESOURCE, BODY)
    assert status == 503 and problem["type"] == "urn:longrun:problem:workflow-unavailable"
    assert table_items(deployed) == []


def test_a_cancel_repeated_after_it_failed_midway_ends_the_task(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault runs found tasks left CANCELLING: the first cancel failed after it recorded CANCELLING (here, the
    execution could not be stopped), and a repeat answered CANCELLING without finishing what the first began."""
    from botocore.exceptions import ClientError

    from longrun import tasks as tasks_module

    status, _, task = call("POST", RESOURCE, BODY)
    assert status == 202
    stop = tasks_module.executions.stop

    def throttled(arn: str, cause: str) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "StopExecution")

    monkeypatch.setattr(tasks_module.executions, "stop", throttled)
    with pytest.raises(ClientError):
        call("DELETE", f"{RESOURCE}/{task['id']}")
    assert call("GET", f"{RESOURCE}/{task['id']}")[2]["status"] == "CANCELLING"
    monkeypatch.setattr(tasks_module.executions, "stop", stop)
    status, _, cancelled = call("DELETE", f"{RESOURCE}/{task['id']}")
    assert (status, cancelled["status"]) == (200, "CANCELLED")
    (execution,) = executions(deployed)
    assert (
        boto3.client("stepfunctions").describe_execution(executionArn=execution["executionArn"])["status"] == "ABORTED"
    )


def test_the_first_step_whose_own_write_acted_but_its_answer_was_lost_goes_on(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault runs found tasks FAILED: StartRun's move to IN_PROGRESS acted, its answer was lost, the SDK repeated
    it, and the repeat's condition (SUBMITTED) failed."""
    from longrun import lifecycle
    from longrun import workflow as workflow_steps
    from longrun.store import ConditionFailed

    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/hello.sh", Body=b"#!/bin/sh\necho hi\n")
    status, _, task = call("POST", RESOURCE, BODY)
    assert status == 202
    change = lifecycle.change_status

    def acted_then_lost(store: Any, task_id: str, to: Any, reason: str | None = None) -> Any:
        change(store, task_id, to, reason=reason)
        raise ConditionFailed("the repeat of a write that acted")

    monkeypatch.setattr(workflow_steps.lifecycle, "change_status", acted_then_lost)
    assert deployed.workflow.start_run(task["id"])["batches"] == [0]
    assert call("GET", f"{RESOURCE}/{task['id']}")[2]["status"] == "IN_PROGRESS"
