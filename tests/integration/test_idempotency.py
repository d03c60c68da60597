"""Idempotency-Key on the API's POSTs: the real handler against AWS APIs, with Powertools' idempotency records in the
template's idempotency table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import pytest

from local_runtime import dynamodb
from tests.integration.conftest import Deployment
from tests.integration.test_api import RESOURCE, call, executions, table_items

WEBHOOKS = "/device-management/webhooks"
BODY = {"device-ids": ["web-1", "web-2"], "script-url": "scripts/hello.sh"}


def _submit(body: Any, key: str, caller: str = "alice") -> tuple[int, dict[str, str], Any]:
    return call("POST", RESOURCE, body, caller=caller, headers={"Idempotency-Key": key})


def _idempotency_records(deployed: Deployment) -> list[dict[str, Any]]:
    table = deployed.stack.functions["ApiFunction"].environment["IDEMPOTENCY_TABLE"]
    return list(boto3.resource("dynamodb").Table(table).scan()["Items"])


def test_a_repeated_submit_answers_the_same_task_and_starts_nothing_more(deployed: Deployment) -> None:
    first = _submit(BODY, "key-1")
    again = _submit(BODY, "key-1")
    assert first[0] == again[0] == 202
    assert again[2] == first[2]
    assert again[1]["Location"] == first[1]["Location"]
    assert [execution["name"] for execution in executions(deployed)] == [first[2]["id"]]
    tasks = {item["PK"] for item in table_items(deployed) if item["SK"] == "TASK"}
    assert tasks == {f"TASK#{first[2]['id']}"}
    (record,) = _idempotency_records(deployed)
    assert record["status"] == "COMPLETED" and record["expiration"] - record["in_progress_expiration"] // 1000 > 0


def test_the_same_key_with_another_body_is_refused(deployed: Deployment) -> None:
    first = _submit(BODY, "key-1")
    status, _, problem = _submit({**BODY, "device-ids": ["web-3"]}, "key-1")
    assert status == 422
    assert problem["title"] == "The Idempotency-Key was used with another request"
    assert [execution["name"] for execution in executions(deployed)] == [first[2]["id"]]


def test_a_key_belongs_to_its_caller(deployed: Deployment) -> None:
    alice = _submit(BODY, "shared-key", caller="alice")
    bob = _submit(BODY, "shared-key", caller="bob")
    assert alice[0] == bob[0] == 202
    assert alice[2]["id"] != bob[2]["id"]
    assert call("GET", f"{RESOURCE}/{alice[2]['id']}", caller="bob")[0] == 404


def test_keys_differ_so_tasks_differ(deployed: Deployment) -> None:
    assert _submit(BODY, "key-1")[2]["id"] != _submit(BODY, "key-2")[2]["id"]
    assert len(executions(deployed)) == 2


def test_a_rejected_request_stores_nothing_and_its_corrected_retry_goes_through(deployed: Deployment) -> None:
    status, _, _ = _submit({**BODY, "script-url": "elsewhere.sh"}, "key-1")
    assert status == 422
    assert _idempotency_records(deployed) == [] and table_items(deployed) == []
    status, _, task = _submit(BODY, "key-1")
    assert status == 202 and [execution["name"] for execution in executions(deployed)] == [task["id"]]


def test_a_request_that_failed_may_be_repeated_with_its_key(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_MACHINE_ARN", deployed.state_machine_arn + "-missing")
    from longrun import config, services

    config.settings.cache_clear()
    services.script_executions.cache_clear()
    status, _, problem = _submit(BODY, "key-1")
    assert status == 503, problem
    assert _idempotency_records(deployed) == []  # the utility deleted its record
    monkeypatch.setenv("STATE_MACHINE_ARN", deployed.state_machine_arn)
    config.settings.cache_clear()
    services.script_executions.cache_clear()
    status, _, task = _submit(BODY, "key-1")
    assert status == 202 and [execution["name"] for execution in executions(deployed)] == [task["id"]]


def _lapse_in_progress(deployed: Deployment) -> None:
    """The key's record as it is left when the first request's function timed out before marking it done, once its
    time in progress is over."""
    table = boto3.resource("dynamodb").Table(deployed.stack.functions["ApiFunction"].environment["IDEMPOTENCY_TABLE"])
    (record,) = _idempotency_records(deployed)
    table.update_item(
        Key={"id": record["id"]},
        UpdateExpression="SET #s = :s, in_progress_expiration = :past REMOVE #d",
        ExpressionAttributeNames={"#s": "status", "#d": "data"},
        ExpressionAttributeValues={":s": "INPROGRESS", ":past": 1},
    )


def _tasks(deployed: Deployment) -> set[str]:
    return {item["PK"].removeprefix("TASK#") for item in table_items(deployed) if item["SK"] == "TASK"}


def test_a_repeat_after_the_first_request_timed_out_answers_the_task_it_made(deployed: Deployment) -> None:
    first = _submit(BODY, "key-1")
    _lapse_in_progress(deployed)
    again = _submit(BODY, "key-1")
    assert again[0] == 202 and again[2]["id"] == first[2]["id"]
    assert [execution["name"] for execution in executions(deployed)] == [first[2]["id"]]
    assert _tasks(deployed) == {first[2]["id"]}
    (record,) = _idempotency_records(deployed)
    assert record["status"] == "COMPLETED"


def test_a_completion_that_cannot_be_written_still_answers_the_task_made(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from botocore.exceptions import ClientError

    def refused(*_: Any) -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")

    with monkeypatch.context() as patched:
        patched.setattr(DynamoDBPersistenceLayer, "_update_record", refused)
        first = _submit(BODY, "key-1")
    assert first[0] == 202
    (record,) = _idempotency_records(deployed)
    assert record["status"] == "INPROGRESS"
    _lapse_in_progress(deployed)
    again = _submit(BODY, "key-1")
    assert again[0] == 202 and again[2]["id"] == first[2]["id"]
    assert len(executions(deployed)) == 1 and _tasks(deployed) == {first[2]["id"]}


def test_an_execution_left_by_a_failed_first_request_is_not_reused(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from longrun.store import TaskStore

    def crashed(*_: Any, **__: Any) -> None:
        raise TimeoutError("the table did not answer")

    with monkeypatch.context() as patched:
        patched.setattr(TaskStore, "create_task", crashed)
        with pytest.raises(TimeoutError):  # the function fails: API Gateway answers 502
            _submit(BODY, "key-1")
    (stopped,) = executions(deployed)
    assert stopped["status"] == "ABORTED"
    status, _, task = _submit(BODY, "key-1")
    assert status == 202 and task["id"] != stopped["name"]
    assert {execution["name"] for execution in executions(deployed)} == {stopped["name"], task["id"]}
    assert _tasks(deployed) == {task["id"]}


def test_a_key_used_again_after_its_window_makes_a_new_task(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from longrun import idempotency

    first = _submit(BODY, "key-1")
    table = boto3.resource("dynamodb").Table(deployed.stack.functions["ApiFunction"].environment["IDEMPOTENCY_TABLE"])
    (record,) = _idempotency_records(deployed)
    table.update_item(
        Key={"id": record["id"]}, UpdateExpression="SET expiration = :past", ExpressionAttributeValues={":past": 1}
    )
    later = idempotency.utc_now() + timedelta(seconds=idempotency.EXPIRES_AFTER_SECONDS + 60)
    monkeypatch.setattr(idempotency, "utc_now", lambda: later)
    status, _, task = _submit(BODY, "key-1")
    assert status == 202 and task["id"] != first[2]["id"]
    assert _tasks(deployed) == {first[2]["id"], task["id"]}


def test_idempotency_records_are_written_through_conflicts(deployed: Deployment) -> None:
    dynamodb.configure(conflict_rate=0.4, seed=11)
    try:
        answers = [_submit(BODY, f"key-{n}") for n in range(8)]
        conflicts = dynamodb.RULES.conflicts
    finally:
        dynamodb.configure()
    assert [status for status, _, _ in answers] == [202] * 8, answers
    assert conflicts > 0
    assert {record["status"] for record in _idempotency_records(deployed)} == {"COMPLETED"}


def test_a_repeat_while_the_first_is_in_progress_answers_409_with_retry_after(deployed: Deployment) -> None:
    _submit(BODY, "key-1")
    table = boto3.resource("dynamodb").Table(deployed.stack.functions["ApiFunction"].environment["IDEMPOTENCY_TABLE"])
    (record,) = _idempotency_records(deployed)
    table.update_item(  # as the record is while the first request runs
        Key={"id": record["id"]},
        UpdateExpression="SET #s = :s, in_progress_expiration = :later REMOVE #d",
        ExpressionAttributeNames={"#s": "status", "#d": "data"},
        ExpressionAttributeValues={":s": "INPROGRESS", ":later": 2**62},
    )
    status, headers, problem = _submit(BODY, "key-1")
    assert status == 409
    assert headers["Retry-After"] == "1"
    assert problem["title"] == "A request with this Idempotency-Key is still in progress"
    assert len(executions(deployed)) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "é"])
def test_a_malformed_key_is_refused_before_anything_is_written(deployed: Deployment, key: str) -> None:
    status, headers, problem = _submit(BODY, key)
    assert status == 422, problem
    assert headers["Content-Type"] == "application/problem+json"
    assert [error["field"] for error in problem["errors"]] == ["header.idempotency-key"]
    assert table_items(deployed) == [] and executions(deployed) == []


@pytest.fixture
def loopback_webhooks(deployed: Deployment, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Webhook URLs may be plain http to a loopback address (as locally): a body for one."""
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK_HTTP", "true")
    from longrun import config

    config.settings.cache_clear()
    return {"url": "http://127.0.0.1:9/hook"}


def test_a_repeated_webhook_creation_answers_the_same_endpoint(loopback_webhooks: dict[str, str]) -> None:
    body = loopback_webhooks
    first = call("POST", WEBHOOKS, body, headers={"Idempotency-Key": "hook-1"})
    again = call("POST", WEBHOOKS, body, headers={"Idempotency-Key": "hook-1"})
    assert first[0] == again[0] == 201
    assert again[2] == first[2] and first[2]["secret"]
    status, _, page = call("GET", WEBHOOKS)
    assert status == 200 and [item["id"] for item in page["items"]] == [first[2]["id"]]
    other = call("POST", WEBHOOKS, {"url": "http://127.0.0.1:9/other"}, headers={"Idempotency-Key": "hook-1"})
    assert other[0] == 422


def test_a_webhook_creation_repeated_after_the_first_timed_out_answers_the_endpoint_it_made(
    deployed: Deployment, loopback_webhooks: dict[str, str]
) -> None:
    body = loopback_webhooks
    first = call("POST", WEBHOOKS, body, headers={"Idempotency-Key": "hook-1"})
    _lapse_in_progress(deployed)
    again = call("POST", WEBHOOKS, body, headers={"Idempotency-Key": "hook-1"})
    assert first[0] == again[0] == 201
    assert (again[2]["id"], again[2]["secret"]) == (first[2]["id"], first[2]["secret"])
    assert [item["id"] for item in call("GET", WEBHOOKS)[2]["items"]] == [first[2]["id"]]
