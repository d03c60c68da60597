"""The one data-access module: it owns the DynamoDB key design and every conditional write.

One table holds every record of a task under the task's partition::

    PK=TASK#<id>  SK=TASK              the task: status, request, per-status device counts
    PK=TASK#<id>  SK=DEVICE#<device>   one device's run (written when the device starts or fails to)
    PK=TASK#<id>  SK=BATCH#<nnnnn>     one SSM command's devices and the workflow token waiting for them

Two owner indexes list a caller's tasks newest first: ``ByOwner`` (all) and ``ByOwnerStatus`` (one status).
Per-status counts live on the task record and move in the same transaction as the device record they count,
so they always add up to the device total and never count a device twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import boto3
from botocore.exceptions import ClientError

from longrun.models import (
    Batch,
    CommandOutcome,
    DeviceCounts,
    DeviceRun,
    DeviceStatus,
    ScriptExecutionRequest,
    Task,
    TaskOutcome,
    TaskStatus,
    device_key,
)

TASK_SK = "TASK"
OWNER_INDEX = "ByOwner"
OWNER_STATUS_INDEX = "ByOwnerStatus"


class ConditionFailed(Exception):
    """A conditional write found the record in another state than it required."""


class InvalidPageToken(ValueError):
    """A pagination token that this store did not issue for this query."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _task_pk(task_id: str) -> str:
    return f"TASK#{task_id}"


def _device_sk(device_id: str | int) -> str:
    return f"DEVICE#{device_key(device_id)}"


def _batch_sk(number: int) -> str:
    return f"BATCH#{number:05d}"


def _owner_pk(owner: str) -> str:
    return f"OWNER#{owner}"


def _owner_status_pk(owner: str, status: TaskStatus) -> str:
    return f"OWNER#{owner}#STATUS#{status.value}"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; the models want ints."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _encode_token(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(_plain(key), separators=(",", ":")).encode()).decode()


def _decode_token(token: str, **expected: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise InvalidPageToken("next-token is not a token this API issued") from error
    if not isinstance(key, dict) or any(key.get(name) != value for name, value in expected.items()):
        raise InvalidPageToken("next-token does not belong to this listing")
    return key


def _is_condition_failure(error: ClientError) -> bool:
    code = error.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons", [])
        return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)
    return False


class TaskStore:
    def __init__(self, table_name: str) -> None:
        self._table = boto3.resource("dynamodb").Table(table_name)
        self._client = self._table.meta.client
        self._table_name = table_name

    # --- tasks ---------------------------------------------------------------------------------

    def create_task(
        self, task_id: str, kind: str, owner: str, request: ScriptExecutionRequest, execution_arn: str
    ) -> Task:
        now = utc_now()
        counts = DeviceCounts(PENDING=len(request.device_ids))
        item = {
            "PK": _task_pk(task_id),
            "SK": TASK_SK,
            "kind": kind,
            "owner": owner,
            "status": TaskStatus.SUBMITTED.value,
            "request": request.model_dump(by_alias=True),
            "counts": counts.model_dump(),
            "executionArn": execution_arn,
            "createdAt": _iso(now),
            "updatedAt": _iso(now),
            "GSI1PK": _owner_pk(owner),
            "GSI1SK": f"{_iso(now)}#{task_id}",
            "GSI2PK": _owner_status_pk(owner, TaskStatus.SUBMITTED),
            "GSI2SK": f"{_iso(now)}#{task_id}",
        }
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(PK)")
        return self._task_from_item(item)

    def get_task(self, task_id: str, consistent: bool = False) -> Task | None:
        item = self._table.get_item(Key={"PK": _task_pk(task_id), "SK": TASK_SK}, ConsistentRead=consistent).get("Item")
        return self._task_from_item(item) if item else None

    def list_tasks(
        self, owner: str, status: TaskStatus | None, limit: int, next_token: str | None
    ) -> tuple[list[Task], str | None]:
        if status is None:
            index, pk_name, pk_value = OWNER_INDEX, "GSI1PK", _owner_pk(owner)
        else:
            index, pk_name, pk_value = OWNER_STATUS_INDEX, "GSI2PK", _owner_status_pk(owner, status)
        query: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": pk_name},
            "ExpressionAttributeValues": {":pk": pk_value},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if next_token:
            query["ExclusiveStartKey"] = _decode_token(next_token, **{pk_name: pk_value})
        page = self._table.query(**query)
        return [self._task_from_item(item) for item in page["Items"]], _encode_token(page.get("LastEvaluatedKey"))

    def change_status(
        self,
        task_id: str,
        to: TaskStatus,
        allowed_from: Iterable[TaskStatus],
        reason: str | None = None,
        require_idle: bool = False,
        outcome: TaskOutcome | None = None,
    ) -> Task:
        """Move a task to ``to`` if it is in one of ``allowed_from``; on a finishing status, turn every device
        that never started into NOT_STARTED. ``require_idle`` also requires that no device is running."""
        now = _iso(utc_now())
        current = self.get_task(task_id, consistent=True)
        if current is None or current.status not in set(allowed_from):
            raise ConditionFailed(f"task {task_id} is {current.status if current else 'missing'}")
        names = {"#s": "status"}
        values: dict[str, Any] = {
            ":to": to.value,
            ":from": current.status.value,
            ":now": now,
            ":gsi2": _owner_status_pk(current.owner, to),
        }
        sets = ["#s = :to", "updatedAt = :now", "GSI2PK = :gsi2"]
        condition = "#s = :from"
        if reason is not None:
            sets.append("statusReason = :reason")
            values[":reason"] = reason
        if to.finished or require_idle:
            names["#c"] = "counts"
        if to.finished:
            sets += ["completedAt = :now", "#c.NOT_STARTED = #c.NOT_STARTED + #c.PENDING", "#c.PENDING = :zero"]
            values[":zero"] = 0
        if outcome is not None:
            sets.append("outcome = :outcome")
            values[":outcome"] = outcome.model_dump()
        if require_idle:
            condition += " AND #c.RUNNING = :zero"
            values[":zero"] = 0
        try:
            attributes = self._table.update_item(
                Key={"PK": _task_pk(task_id), "SK": TASK_SK},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as error:
            if _is_condition_failure(error):
                raise ConditionFailed(f"task {task_id} changed while moving to {to}") from error
            raise
        return self._task_from_item(attributes)

    # --- batches and devices -------------------------------------------------------------------

    def start_batch(self, batch: Batch, running: dict[str | int, str], unknown: dict[str | int, str]) -> None:
        """Record a batch as started, in one transaction that requires the task to be IN_PROGRESS: the devices in
        ``running`` (device id -> instance id) become RUNNING, those in ``unknown`` (device id -> reason) FAILED."""
        now = _iso(utc_now())
        pk = _task_pk(batch.task_id)
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table_name,
                    "Item": {
                        "PK": pk,
                        "SK": _batch_sk(batch.number),
                        "deviceIds": batch.device_ids,
                        "instances": batch.instances,
                        "taskToken": batch.task_token,
                    },
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {
                "Update": {
                    "TableName": self._table_name,
                    "Key": {"PK": pk, "SK": TASK_SK},
                    "UpdateExpression": "SET #c.PENDING = #c.PENDING - :n, #c.RUNNING = #c.RUNNING + :r, "
                    "#c.FAILED = #c.FAILED + :u, updatedAt = :now",
                    "ConditionExpression": "#s = :in_progress AND #c.PENDING >= :n",
                    "ExpressionAttributeNames": {"#c": "counts", "#s": "status"},
                    "ExpressionAttributeValues": {
                        ":n": len(running) + len(unknown),
                        ":r": len(running),
                        ":u": len(unknown),
                        ":now": now,
                        ":in_progress": TaskStatus.IN_PROGRESS.value,
                    },
                }
            },
        ]
        for device_id, instance_id in running.items():
            actions.append(self._put_device(pk, device_id, DeviceStatus.RUNNING, now, instanceId=instance_id))
        for device_id, reason in unknown.items():
            actions.append(self._put_device(pk, device_id, DeviceStatus.FAILED, now, reason=reason, endedAt=now))
        self._transact(actions)

    def _put_device(
        self, pk: str, device_id: str | int, status: DeviceStatus, now: str | None, **fields: Any
    ) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._table_name,
                "Item": {
                    "PK": pk,
                    "SK": _device_sk(device_id),
                    "deviceId": device_id,
                    "status": status.value,
                    "startedAt": now,
                    **fields,
                },
                "ConditionExpression": "attribute_not_exists(PK)",
            }
        }

    def set_batch_command(self, task_id: str, number: int, command_id: str) -> None:
        """Record the SSM command of a batch, only while the task is IN_PROGRESS (a cancel may have come in while
        the command was being sent; then the caller cancels the command itself)."""
        pk = _task_pk(task_id)
        self._transact(
            [
                {
                    "ConditionCheck": {
                        "TableName": self._table_name,
                        "Key": {"PK": pk, "SK": TASK_SK},
                        "ConditionExpression": "#s = :in_progress",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":in_progress": TaskStatus.IN_PROGRESS.value},
                    }
                },
                {
                    "Update": {
                        "TableName": self._table_name,
                        "Key": {"PK": pk, "SK": _batch_sk(number)},
                        "UpdateExpression": "SET commandId = :cmd",
                        "ConditionExpression": "attribute_exists(PK)",
                        "ExpressionAttributeValues": {":cmd": command_id},
                    }
                },
            ]
        )

    def get_batch(self, task_id: str, number: int) -> Batch | None:
        item = self._table.get_item(Key={"PK": _task_pk(task_id), "SK": _batch_sk(number)}, ConsistentRead=True).get(
            "Item"
        )
        return self._batch_from_item(item) if item else None

    def batches(self, task_id: str) -> Iterator[Batch]:
        for item in self._query_prefix(task_id, "BATCH#"):
            yield self._batch_from_item(item)

    def finish_device(self, task_id: str, device_id: str | int, outcome: CommandOutcome) -> bool:
        """Record a running device's outcome and move the task's counts with it, once: a second report of the same
        device changes nothing and answers False."""
        pk = _task_pk(task_id)
        fields = {
            "status": outcome.status.value,
            "reason": outcome.reason,
            "exitCode": outcome.exit_code,
            "endedAt": _iso(outcome.ended_at or utc_now()),
            "commandId": outcome.command_id,
            "stdoutUrl": outcome.stdout_url,
            "stderrUrl": outcome.stderr_url,
            "stdoutHead": outcome.stdout_head,
            "stderrHead": outcome.stderr_head,
        }
        if outcome.started_at:
            fields["startedAt"] = _iso(outcome.started_at)
        present = {name: value for name, value in fields.items() if value is not None}
        names = {f"#f{i}": name for i, name in enumerate(present)}
        values: dict[str, Any] = {f":f{i}": value for i, value in enumerate(present.values())}
        values[":running"] = DeviceStatus.RUNNING.value
        try:
            self._transact(
                [
                    {
                        "Update": {
                            "TableName": self._table_name,
                            "Key": {"PK": pk, "SK": _device_sk(device_id)},
                            "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(present))),
                            "ConditionExpression": "#f0 = :running",
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values,
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table_name,
                            "Key": {"PK": pk, "SK": TASK_SK},
                            "UpdateExpression": "SET #c.RUNNING = #c.RUNNING - :one, #c.#to = #c.#to + :one, "
                            "updatedAt = :now",
                            "ExpressionAttributeNames": {"#c": "counts", "#to": outcome.status.value},
                            "ExpressionAttributeValues": {":one": 1, ":now": _iso(utc_now())},
                        }
                    },
                ]
            )
        except ConditionFailed:
            return False
        return True

    def mark_batch_done(self, task_id: str, number: int, instance_ids: Iterable[str]) -> Batch:
        """Add instances to the batch's done set (a set, so a repeated report is harmless); answer the batch."""
        attributes = self._table.update_item(
            Key={"PK": _task_pk(task_id), "SK": _batch_sk(number)},
            UpdateExpression="ADD done :ids",
            ConditionExpression="attribute_exists(PK)",
            ExpressionAttributeValues={":ids": set(instance_ids)},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return self._batch_from_item(attributes)

    def device_runs_of(self, task_id: str, device_ids: Iterable[str | int]) -> dict[str, DeviceRun]:
        """The runs of the given devices (at most 100), by device key; a device that never started has none."""
        keys = [{"PK": _task_pk(task_id), "SK": _device_sk(device_id)} for device_id in device_ids]
        runs: dict[str, DeviceRun] = {}
        request: dict[str, Any] = {self._table_name: {"Keys": keys, "ConsistentRead": True}}
        while keys and request:
            response = self._client.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(self._table_name, []):
                run = self._device_from_item(item)
                runs[device_key(run.device_id)] = run
            request = response.get("UnprocessedKeys") or {}
        return runs

    def all_device_runs(self, task_id: str) -> Iterator[DeviceRun]:
        for item in self._query_prefix(task_id, "DEVICE#"):
            yield self._device_from_item(item)

    # --- helpers -------------------------------------------------------------------------------

    def _query_prefix(self, task_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": {":pk": _task_pk(task_id), ":prefix": prefix},
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**query)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _transact(self, actions: list[dict[str, Any]]) -> None:
        try:
            self._client.transact_write_items(TransactItems=cast(Any, actions))
        except ClientError as error:
            if _is_condition_failure(error):
                raise ConditionFailed(str(error)) from error
            raise

    @staticmethod
    def _task_from_item(item: dict[str, Any]) -> Task:
        item = _plain(item)
        return Task(
            id=item["PK"].removeprefix("TASK#"),
            kind=item["kind"],
            owner=item["owner"],
            status=item["status"],
            status_reason=item.get("statusReason"),
            request=ScriptExecutionRequest.model_validate(item["request"]),
            counts=DeviceCounts.model_validate(item["counts"]),
            execution_arn=item.get("executionArn"),
            created_at=item["createdAt"],
            updated_at=item["updatedAt"],
            completed_at=item.get("completedAt"),
            outcome=TaskOutcome.model_validate(item["outcome"]) if "outcome" in item else None,
        )

    @staticmethod
    def _batch_from_item(item: dict[str, Any]) -> Batch:
        item = _plain(item)
        return Batch(
            task_id=item["PK"].removeprefix("TASK#"),
            number=int(item["SK"].removeprefix("BATCH#")),
            device_ids=item["deviceIds"],
            instances=item.get("instances", {}),
            task_token=item["taskToken"],
            command_id=item.get("commandId"),
            done=set(item.get("done", set())),
        )

    @staticmethod
    def _device_from_item(item: dict[str, Any]) -> DeviceRun:
        item = _plain(item)
        return DeviceRun(
            device_id=item["deviceId"],
            status=item["status"],
            reason=item.get("reason"),
            instance_id=item.get("instanceId"),
            command_id=item.get("commandId"),
            exit_code=item.get("exitCode"),
            started_at=item.get("startedAt"),
            ended_at=item.get("endedAt"),
            stdout_url=item.get("stdoutUrl"),
            stderr_url=item.get("stderrUrl"),
            stdout_head=item.get("stdoutHead"),
            stderr_head=item.get("stderrHead"),
        )
