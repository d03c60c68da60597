"""The one data-access module: it owns the DynamoDB key design and every conditional write.

One table holds every record of a task under the task's partition::

    PK=TASK#<id>  SK=TASK                 the task: status, settings, per-status device counts (under 1 KB)
    PK=TASK#<id>  SK=TASK#IDS#<nnnn>      the device ids in request order, 1,000 a record
    PK=TASK#<id>  SK=TASK#OUTCOMES        once finished: one status letter per device, in request order
    PK=TASK#<id>  SK=BATCH#<nnnnn>        one SSM command's devices and the workflow token waiting for them
    PK=TASK#<id>  SK=DEVICE#<nnnnn>       one device's outcome, by its position in the request

The task record stays small, because every device's outcome updates its counts: a write costs a capacity unit
per KB. The records that start with TASK are read together by one query. Two owner indexes list a caller's
tasks newest first, ``ByOwner`` (all) and ``ByOwnerStatus`` (one status); they carry only what a listing shows,
so a device's outcome never writes to them. Per-status counts move in the same transaction as the device record
they count, so they always add up to the device total and never count a device twice.
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
    TaskDevices,
    TaskSettings,
    TaskStatus,
)

TASK_SK = "TASK"
IDS_PER_RECORD = 1_000
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


def _ids_sk(chunk: int) -> str:
    return f"TASK#IDS#{chunk:04d}"


def _device_sk(index: int) -> str:
    return f"DEVICE#{index:05d}"


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
        """The task and its device list, in one transaction (one request, whatever the fleet size)."""
        now = _iso(utc_now())
        pk = _task_pk(task_id)
        settings = TaskSettings.model_validate(request.model_dump(exclude={"device_ids"}))
        item = {
            "PK": pk,
            "SK": TASK_SK,
            "kind": kind,
            "owner": owner,
            "status": TaskStatus.SUBMITTED.value,
            "settings": settings.model_dump(exclude_none=True),
            "deviceCount": len(request.device_ids),
            "counts": DeviceCounts(PENDING=len(request.device_ids)).model_dump(),
            "executionArn": execution_arn,
            "createdAt": now,
            "updatedAt": now,
            "GSI1PK": _owner_pk(owner),
            "GSI1SK": f"{now}#{task_id}",
            "GSI2PK": _owner_status_pk(owner, TaskStatus.SUBMITTED),
            "GSI2SK": f"{now}#{task_id}",
        }
        actions: list[dict[str, Any]] = [
            {"Put": {"TableName": self._table_name, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}
        ]
        for chunk, start in enumerate(range(0, len(request.device_ids), IDS_PER_RECORD)):
            record = {"PK": pk, "SK": _ids_sk(chunk), "ids": request.device_ids[start : start + IDS_PER_RECORD]}
            actions.append({"Put": {"TableName": self._table_name, "Item": record}})
        self._transact(actions)
        return self._task_from_item(item)

    def get_task(self, task_id: str, consistent: bool = False) -> Task | None:
        item = self._table.get_item(Key={"PK": _task_pk(task_id), "SK": TASK_SK}, ConsistentRead=consistent).get("Item")
        return self._task_from_item(item) if item else None

    def get_task_with_devices(self, task_id: str) -> tuple[Task, TaskDevices] | None:
        """The task, its device ids and (once finished) their outcomes: one query."""
        items = list(self._query_prefix(task_id, TASK_SK))
        task = next((item for item in items if item["SK"] == TASK_SK), None)
        if task is None:
            return None
        ids = [i for item in items if item["SK"].startswith("TASK#IDS#") for i in _plain(item["ids"])]
        outcomes = next((item["letters"] for item in items if item["SK"] == "TASK#OUTCOMES"), None)
        return self._task_from_item(task), TaskDevices(ids=ids, outcomes=outcomes)

    def device_ids(self, task_id: str, start: int, end: int) -> list[str | int]:
        """The ids of the devices at positions start..end-1."""
        first, last = start // IDS_PER_RECORD, (end - 1) // IDS_PER_RECORD
        page = self._table.query(
            KeyConditionExpression="PK = :pk AND SK BETWEEN :first AND :last",
            ExpressionAttributeValues={":pk": _task_pk(task_id), ":first": _ids_sk(first), ":last": _ids_sk(last)},
        )
        ids = [i for item in page["Items"] for i in _plain(item["ids"])]
        offset = first * IDS_PER_RECORD
        return ids[start - offset : end - offset]

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
        outcomes: str | None = None,
    ) -> Task:
        """Move a task to ``to`` if it is in one of ``allowed_from``. On a finishing status, every device that never
        started becomes NOT_STARTED and ``outcomes`` (a letter per device) is kept beside the task, in the same
        transaction. ``require_idle`` also requires that no device is running."""
        now = utc_now()
        current = self.get_task(task_id, consistent=True)
        if current is None or current.status not in set(allowed_from):
            raise ConditionFailed(f"task {task_id} is {current.status if current else 'missing'}")
        names = {"#s": "status"}
        values: dict[str, Any] = {
            ":to": to.value,
            ":from": current.status.value,
            ":now": _iso(now),
            ":gsi2": _owner_status_pk(current.owner, to),
        }
        sets = ["#s = :to", "updatedAt = :now", "GSI2PK = :gsi2"]
        condition = "#s = :from"
        if reason is not None:
            sets.append("statusReason = :reason")
            values[":reason"] = reason
        if to is TaskStatus.IN_PROGRESS:
            sets.append("startedAt = :now")
        if to.finished or require_idle:
            names["#c"] = "counts"
            values[":zero"] = 0
        if to.finished:
            sets += ["completedAt = :now", "#c.NOT_STARTED = #c.NOT_STARTED + #c.PENDING", "#c.PENDING = :zero"]
        if require_idle:
            condition += " AND #c.RUNNING = :zero"
        update: dict[str, Any] = {
            "TableName": self._table_name,
            "Key": {"PK": _task_pk(task_id), "SK": TASK_SK},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if outcomes is None:
            try:
                self._client.update_item(**update)
            except ClientError as error:
                if _is_condition_failure(error):
                    raise ConditionFailed(f"task {task_id} changed while moving to {to}") from error
                raise
        else:
            outcome_item = {"PK": _task_pk(task_id), "SK": "TASK#OUTCOMES", "letters": outcomes}
            self._transact([{"Update": update}, {"Put": {"TableName": self._table_name, "Item": outcome_item}}])
        changed = self.get_task(task_id, consistent=True)
        assert changed is not None
        return changed

    # --- batches and devices -------------------------------------------------------------------

    def start_batch(self, batch: Batch, failed: dict[int, str]) -> None:
        """Record a batch as started, in one transaction that requires the task to be IN_PROGRESS: its devices with
        a node become RUNNING, and those in ``failed`` (device index -> reason) FAILED at once."""
        now = _iso(utc_now())
        pk = _task_pk(batch.task_id)
        running = len(batch.nodes)
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table_name,
                    "Item": {
                        "PK": pk,
                        "SK": _batch_sk(batch.number),
                        "start": batch.start,
                        "deviceIds": batch.device_ids,
                        "nodes": batch.nodes,
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
                        ":n": running + len(failed),
                        ":r": running,
                        ":u": len(failed),
                        ":now": now,
                        ":in_progress": TaskStatus.IN_PROGRESS.value,
                    },
                }
            },
        ]
        for index, reason in failed.items():
            run = DeviceRun(index=index, device_id=batch.device_at(index), status=DeviceStatus.FAILED, reason=reason)
            item = self._device_item(pk, run) | {"endedAt": now}
            actions.append({"Put": {"TableName": self._table_name, "Item": item}})
        self._transact(actions)

    def set_batch_command(self, task_id: str, number: int, command_id: str, cut_by_deadline: bool) -> None:
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
                        "UpdateExpression": "SET commandId = :cmd, cutByDeadline = :cut",
                        "ConditionExpression": "attribute_exists(PK)",
                        "ExpressionAttributeValues": {":cmd": command_id, ":cut": cut_by_deadline},
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

    def finish_device(self, batch: Batch, index: int, outcome: CommandOutcome) -> bool:
        """Record a running device's outcome and move the task's counts with it, once: a second report of the same
        device changes nothing and answers False."""
        pk = _task_pk(batch.task_id)
        run = DeviceRun(
            index=index,
            device_id=batch.device_at(index),
            status=outcome.status,
            reason=outcome.reason,
            node_id=outcome.node_id,
            command_id=outcome.command_id,
            exit_code=outcome.exit_code,
            started_at=outcome.started_at,
            ended_at=outcome.ended_at or utc_now(),
            stdout_url=outcome.stdout_url,
        )
        try:
            self._transact(
                [
                    {
                        "Put": {
                            "TableName": self._table_name,
                            "Item": self._device_item(pk, run),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table_name,
                            "Key": {"PK": pk, "SK": TASK_SK},
                            "UpdateExpression": "SET #c.RUNNING = #c.RUNNING - :one, #c.#to = #c.#to + :one, "
                            "updatedAt = :now",
                            "ConditionExpression": "#c.RUNNING >= :one",
                            "ExpressionAttributeNames": {"#c": "counts", "#to": outcome.status.value},
                            "ExpressionAttributeValues": {":one": 1, ":now": _iso(utc_now())},
                        }
                    },
                ]
            )
        except ConditionFailed:
            return False
        return True

    def device_recorded(self, task_id: str, index: int) -> bool:
        """Whether a device's outcome is recorded: a read, 20 times cheaper than a write that would fail."""
        key = {"PK": _task_pk(task_id), "SK": _device_sk(index)}
        return "Item" in self._table.get_item(Key=key, ProjectionExpression="SK")

    def device_runs(self, task_id: str, start: int, end: int) -> dict[int, DeviceRun]:
        """The recorded runs of the devices at positions start..end-1, by position."""
        items = self._query_all(
            "PK = :pk AND SK BETWEEN :first AND :last",
            {":pk": _task_pk(task_id), ":first": _device_sk(start), ":last": _device_sk(end - 1)},
        )
        runs = (self._device_from_item(item) for item in items)
        return {run.index: run for run in runs}

    def all_device_runs(self, task_id: str) -> Iterator[DeviceRun]:
        for item in self._query_prefix(task_id, "DEVICE#"):
            yield self._device_from_item(item)

    # --- helpers -------------------------------------------------------------------------------

    def _query_prefix(self, task_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        return self._query_all("PK = :pk AND begins_with(SK, :prefix)", {":pk": _task_pk(task_id), ":prefix": prefix})

    def _query_all(self, condition: str, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a strongly consistent query, page after page."""
        query: dict[str, Any] = {
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
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
    def _device_item(pk: str, run: DeviceRun) -> dict[str, Any]:
        fields = {
            "PK": pk,
            "SK": _device_sk(run.index),
            "deviceId": run.device_id,
            "status": run.status.value,
            "reason": run.reason,
            "nodeId": run.node_id,
            "commandId": run.command_id,
            "exitCode": run.exit_code,
            "startedAt": _iso(run.started_at),
            "endedAt": _iso(run.ended_at),
            "stdoutUrl": run.stdout_url,
        }
        return {name: value for name, value in fields.items() if value is not None}

    @staticmethod
    def _task_from_item(item: dict[str, Any]) -> Task:
        item = _plain(item)
        return Task(
            id=item["PK"].removeprefix("TASK#"),
            kind=item["kind"],
            owner=item["owner"],
            status=item["status"],
            status_reason=item.get("statusReason"),
            settings=TaskSettings.model_validate(item["settings"]),
            device_count=item["deviceCount"],
            counts=DeviceCounts.model_validate(item.get("counts", {})),
            execution_arn=item.get("executionArn"),
            created_at=item["createdAt"],
            updated_at=item.get("updatedAt", item["createdAt"]),
            started_at=item.get("startedAt"),
            completed_at=item.get("completedAt"),
        )

    @staticmethod
    def _batch_from_item(item: dict[str, Any]) -> Batch:
        item = _plain(item)
        return Batch(
            task_id=item["PK"].removeprefix("TASK#"),
            number=int(item["SK"].removeprefix("BATCH#")),
            start=item["start"],
            device_ids=item["deviceIds"],
            nodes=item.get("nodes", {}),
            task_token=item["taskToken"],
            command_id=item.get("commandId"),
            cut_by_deadline=item.get("cutByDeadline", False),
        )

    @staticmethod
    def _device_from_item(item: dict[str, Any]) -> DeviceRun:
        item = _plain(item)
        return DeviceRun(
            index=int(item["SK"].removeprefix("DEVICE#")),
            device_id=item["deviceId"],
            status=item["status"],
            reason=item.get("reason"),
            node_id=item.get("nodeId"),
            command_id=item.get("commandId"),
            exit_code=item.get("exitCode"),
            started_at=item.get("startedAt"),
            ended_at=item.get("endedAt"),
            stdout_url=item.get("stdoutUrl"),
        )
