"""The one data-access module: it owns the DynamoDB key design and every conditional write.

One table holds every record of a task under the task's partition::

    PK=TASK#<id>  SK=TASK                 the task's state, which every device's outcome updates: status, per-status
                                          device counts, dates, execution. Nothing in it grows with the request or
                                          the caller, so it stays well under 1 KB
    PK=TASK#<id>  SK=TASK#DETAIL          what does not change per device: the owner (and its key's digest), the
                                          settings and script, the status and its reason (copied at each status
                                          change); what a listing shows
    PK=TASK#<id>  SK=TASK#IDS#<nnnn>      the device ids in request order, 1,000 a record
    PK=TASK#<id>  SK=TASK#OUTCOMES        once finished: one status letter per device, in request order
    PK=TASK#<id>  SK=BATCH#<nnnnn>        one SSM command's devices and the workflow token waiting for them; written
                                          when the batch starts, its nodes say which devices run (a device
                                          without a DEVICE# record in a batch whose command is sent is RUNNING)
    PK=TASK#<id>  SK=DEVICE#<nnnnn>       one device's outcome, by its position in the request (under 1 KB)
    PK=TASK#<id>  SK=EVENT#<event id>     a pushed event, kept so subscribers can resume (status changes and the
                                          end always; progress once the task has had a subscriber)
    PK=TASK#<id>  SK=SUBSCRIBER#<conn>    a WebSocket connection subscribed to the task (expires with it)
    PK=CONNECTION#<conn>  SK=CONNECTION   a WebSocket connection: its owner and the tasks it subscribed to (TTL)
    PK=OWNER#<digest>  SK=WEBHOOK#<id>    one of an owner's webhook endpoints, with its secrets
    PK=WEBHOOK#<id>  SK=DELIVERY#<id>     a delivery to an endpoint and each of its attempts (kept 30 days)

The table's stream is the change feed: each write to a task's state (SK=TASK) counts up its ``version`` and
carries, in ``outcomes``, the devices whose outcome it records; the publisher turns them into events numbered by the
version, so a change keeps its event id however often the stream delivers it.

A write costs a capacity unit per KB, twice that in a transaction; each device's outcome is one transaction of its
own record and the task's counts, so both stay under 1 KB: 4 write units per device. The task and its detail are
read together by one query, and with the device ids by another. Two owner indexes on the detail list a caller's
tasks newest first, ``ByOwner`` (all) and ``ByOwnerStatus`` (one status); they are keyed by a digest of the owner's
key, and a device's outcome never writes to them. Per-status counts move in the same transaction as the device
record they count, so they always add up to the device total and never count a device twice.

DynamoDB cancels a transaction that touches an item another transaction is writing (TransactionConflict), and the
SDK does not retry it: every write here is retried with jittered backoff on such conflicts (never on a failed
condition), and raises WriteConflict only if the item stayed contended throughout.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache, cached_property
from typing import Any, TypeVar, cast

from botocore.exceptions import ClientError

from longrun import aws_clients
from longrun.records import (
    Attempt,
    Batch,
    CommandOutcome,
    Delivery,
    DeliveryStatus,
    DeviceCounts,
    DeviceRun,
    DeviceStatus,
    ListedTask,
    Owner,
    RecordedOutcome,
    Task,
    TaskDevices,
    TaskEventType,
    TaskSettings,
    TaskStateChange,
    TaskStatus,
    WebhookEndpoint,
    moment,
    optional_moment,
)

TASK_SK = "TASK"
DETAIL_SK = "TASK#DETAIL"
"""Sorts right after TASK and before TASK#IDS, so one query reads exactly the task and its detail"""
IDS_PER_RECORD = 1_000
TABLE_KEY = frozenset({"PK", "SK"})
MAX_KEY_BYTES = 1024
"""DynamoDB's largest sort key value (a partition key may hold 2,048 bytes; longrun's hold far fewer)"""
OWNER_INDEX = "ByOwner"
OWNER_STATUS_INDEX = "ByOwnerStatus"
MAX_REASON_BYTES = 300
"""A device's reason is cut to this (UTF-8), so its record stays under 1 KB"""
VERSION_BUMP = " ADD version :one"
"""Every write to a task's state counts its version up: the change feed numbers the task's events by it"""
DELIVERY_LOG_DAYS = 30
LONGEST_RUN = timedelta(days=366)
"""No task runs longer: its Step Functions execution (a standard workflow) ends within a year"""
DEFAULT_RETENTION = timedelta(days=90)
CONFLICT_ATTEMPTS = 12
CONFLICT_BACKOFF = (0.025, 1.0)
"""Full-jitter exponential backoff between attempts: first ceiling, largest ceiling (seconds)"""


T = TypeVar("T")


class ConditionFailed(Exception):
    """A conditional write found the record in another state than it required."""


class WriteConflict(Exception):
    """A write kept colliding with concurrent transactions on the same item, attempt after attempt."""


class InvalidPageToken(ValueError):
    """A pagination token that this store did not issue for this query."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def owner_digest(owner_key: str) -> str:
    """A fixed-size stand-in for an owner's key (which can be a long ARN) in the task and the index keys."""
    return base64.urlsafe_b64encode(hashlib.sha256(owner_key.encode()).digest()[:16]).decode().rstrip("=")


def _task_pk(task_id: str) -> str:
    return f"TASK#{task_id}"


def _ids_sk(chunk: int) -> str:
    return f"TASK#IDS#{chunk:04d}"


def _device_sk(index: int) -> str:
    return f"DEVICE#{index:05d}"


Finished = tuple[Batch, int, CommandOutcome]
"""A device whose run ended: its batch, its position in the task, and how its run ended"""


def _device_index(sk: str) -> int:
    return int(sk.removeprefix("DEVICE#"))


def _batch_sk(number: int) -> str:
    return f"BATCH#{number:05d}"


def _event_sk(event_id: int) -> str:
    return f"EVENT#{event_id:016d}"


def _subscriber_sk(connection_id: str) -> str:
    return f"SUBSCRIBER#{connection_id}"


def _connection_key(connection_id: str) -> dict[str, str]:
    return {"PK": f"CONNECTION#{connection_id}", "SK": "CONNECTION"}


def _webhook_key(owner_key: str, webhook_id: str) -> dict[str, str]:
    return {"PK": _owner_pk(owner_key), "SK": f"WEBHOOK#{webhook_id}"}


def _delivery_key(webhook_id: str, queued_at: datetime, delivery_id: str) -> dict[str, str]:
    """Sorted by when the delivery was queued, so a listing shows the newest first."""
    return {"PK": f"WEBHOOK#{webhook_id}", "SK": f"DELIVERY#{_iso(queued_at)}#{delivery_id}"}


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _owner_pk(digest: str) -> str:
    return f"OWNER#{digest}"


def _owner_status_pk(digest: str, status: TaskStatus) -> str:
    return f"OWNER#{digest}#STATUS#{status.value}"


def _expired(item: dict[str, Any]) -> bool:
    """Whether an item's time (its expiresAt, earlier than now: DynamoDB's TTL rule) has come: TTL deletes it within
    days, and until then it is gone for every read all the same."""
    return "expiresAt" in item and int(item["expiresAt"]) < _epoch(utc_now())


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


def _decode_token(token: str, names: frozenset[str], sk_prefix: str = "", **expected: str) -> dict[str, Any]:
    """The key a page continues from: a token must be the key this listing's query ended at, its attributes
    ``names`` (the table's key, and the index's when the listing reads one), all strings, ``expected`` among them,
    and its sort key inside the query's range (DynamoDB refuses a start key outside it)."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as error:
        raise InvalidPageToken("next-token is not a token this API issued") from error
    if (
        not isinstance(key, dict)
        or set(key) != names
        or not all(isinstance(value, str) and 0 < len(value.encode()) <= MAX_KEY_BYTES for value in key.values())
        or any(key.get(name) != value for name, value in expected.items())
        or not key["SK"].startswith(sk_prefix)
    ):
        raise InvalidPageToken("next-token does not belong to this listing")
    return key


def _image(image: dict[str, Any] | None) -> dict[str, Any]:
    """A stream record's image as plain values."""
    if not image:
        return {}
    deserializer = _deserializer()
    return cast(dict[str, Any], _plain({name: deserializer.deserialize(value) for name, value in image.items()}))


@cache
def _deserializer() -> Any:
    from boto3.dynamodb.types import TypeDeserializer  # with boto3, imported when first needed (longrun.aws_clients)

    return TypeDeserializer()


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that have a value (DynamoDB keeps no attribute for a missing one)."""
    return {name: value for name, value in fields.items() if value is not None}


def _outcome(device_item: dict[str, Any]) -> dict[str, Any]:
    """What the task's state says of a device whose outcome the same write records: the change feed reads it."""
    return {name: device_item[name] for name in ("deviceId", "status", "exitCode", "reason") if name in device_item}


def _reasons(error: ClientError) -> set[str]:
    return {reason.get("Code", "") for reason in error.response.get("CancellationReasons", [])}


def _is_condition_failure(error: ClientError) -> bool:
    code = error.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return True
    return code == "TransactionCanceledException" and "ConditionalCheckFailed" in _reasons(error)


def _is_conflict(error: ClientError) -> bool:
    code = error.response["Error"]["Code"]
    if code == "TransactionConflictException":
        return True
    return code == "TransactionCanceledException" and "TransactionConflict" in _reasons(error)


def retry_conflicts(call: Callable[[], T]) -> T:
    """``call()``, made again after a jittered pause while DynamoDB refuses it as conflicting with a transaction on
    its items (which the SDKs do not retry), unless a condition failed too; WriteConflict once it has conflicted
    ``CONFLICT_ATTEMPTS`` times."""
    attempt = 0
    while True:
        try:
            return call()
        except ClientError as error:
            attempt += 1
            if not _is_conflict(error) or _is_condition_failure(error):  # a failed condition is final
                raise
            if attempt == CONFLICT_ATTEMPTS:
                raise WriteConflict(f"still conflicting after {CONFLICT_ATTEMPTS} attempts: {error}") from error
        first, largest = CONFLICT_BACKOFF
        time.sleep(random.uniform(0, min(largest, first * 2 ** (attempt - 1))))  # noqa: S311 - jitter, not secrets


def _new_client() -> Any:
    """A DynamoDB client that takes and answers Python values, as a Table resource's client does, without building
    the resource (its model costs a cold start about as much as the client itself). Its condition expressions are
    built with a counter: one client per thread."""
    from boto3.dynamodb.transform import TransformationInjector, copy_dynamodb_params

    client = aws_clients.client("dynamodb")
    events, injector = client.meta.events, TransformationInjector()
    events.register("provide-client-params.dynamodb", copy_dynamodb_params)
    events.register("before-parameter-build.dynamodb", injector.inject_condition_expressions)
    events.register("before-parameter-build.dynamodb", injector.inject_attribute_value_input)
    events.register("after-call.dynamodb", injector.inject_attribute_value_output)
    return client


class TaskStore:
    def __init__(self, table_name: str, retention: timedelta = DEFAULT_RETENTION) -> None:
        """``retention``: how long a finished task is kept (``expiresAt``, the table's TTL attribute). Its own
        records are set to expire that long after it ended; those written while it ran (its devices, batches and
        events) that long after the longest a task may run, as none of them is rewritten when it ends. Reads take a
        task whose time has come as gone, whether or not TTL has deleted it yet."""
        self._table_name = table_name
        self._retention = retention

    @cached_property
    def _client(self) -> Any:
        """Made on first use, not with the store: a request refused before it reaches DynamoDB (an invalid webhook
        URL) does not pay for the client's model in a cold start."""
        return _new_client()

    def _kept_while_running(self) -> int:
        """The expiresAt of a record written while its task may still run."""
        return _epoch(utc_now() + LONGEST_RUN + self._retention)

    # --- tasks ---------------------------------------------------------------------------------

    def create_task(
        self,
        task_id: str,
        kind: str,
        owner: Owner,
        settings: TaskSettings,
        device_ids: list[str | int],
        execution_arn: str,
    ) -> Task:
        """The task, its detail and its device list, in one transaction (one request, whatever the fleet size)."""
        now = _iso(utc_now())
        pk = _task_pk(task_id)
        digest = owner_digest(owner.key)
        kept = self._kept_while_running()
        state = {
            "PK": pk,
            "SK": TASK_SK,
            "expiresAt": kept,
            "status": TaskStatus.SUBMITTED.value,
            "counts": DeviceCounts(PENDING=len(device_ids)).as_dict(),
            "executionArn": execution_arn,
            "createdAt": now,
            "updatedAt": now,
            "version": 1,
        }
        detail = {
            "PK": pk,
            "SK": DETAIL_SK,
            "expiresAt": kept,
            "kind": kind,
            "owner": owner.name,
            "ownerKey": digest,
            "status": TaskStatus.SUBMITTED.value,
            "settings": settings.as_dict(),
            "deviceCount": len(device_ids),
            "createdAt": now,
            "GSI1PK": _owner_pk(digest),
            "GSI1SK": f"{now}#{task_id}",
            "GSI2PK": _owner_status_pk(digest, TaskStatus.SUBMITTED),
            "GSI2SK": f"{now}#{task_id}",
        }
        new = "attribute_not_exists(PK)"
        actions: list[dict[str, Any]] = [
            {"Put": {"TableName": self._table_name, "Item": state, "ConditionExpression": new}},
            {"Put": {"TableName": self._table_name, "Item": detail, "ConditionExpression": new}},
        ]
        for chunk, start in enumerate(range(0, len(device_ids), IDS_PER_RECORD)):
            record = {
                "PK": pk,
                "SK": _ids_sk(chunk),
                "ids": device_ids[start : start + IDS_PER_RECORD],
                "expiresAt": kept,
            }
            actions.append({"Put": {"TableName": self._table_name, "Item": record}})
        self._transact(actions)
        return self._task_from_items(state, detail)

    def get_task(self, task_id: str) -> Task | None:
        """The task as it is now (a strongly consistent read of it and its detail)."""
        items = list(
            self._query_all(
                "PK = :pk AND SK BETWEEN :task AND :detail",
                {":pk": _task_pk(task_id), ":task": TASK_SK, ":detail": DETAIL_SK},
            )
        )
        return self._task_from_records(items)

    def get_task_with_devices(self, task_id: str) -> tuple[Task, TaskDevices] | None:
        """The task, its device ids and (once finished) their outcomes: one query."""
        items = list(self._query_prefix(task_id, TASK_SK))
        task = self._task_from_records(items)
        if task is None:
            return None
        ids = [i for item in items if item["SK"].startswith("TASK#IDS#") for i in _plain(item["ids"])]
        outcomes = next((item["letters"] for item in items if item["SK"] == "TASK#OUTCOMES"), None)
        return task, TaskDevices(ids=ids, outcomes=outcomes)

    def device_ids(self, task_id: str, start: int, end: int) -> list[str | int]:
        """The ids of the devices at positions start..end-1."""
        first, last = start // IDS_PER_RECORD, (end - 1) // IDS_PER_RECORD
        items = self._query_all(
            "PK = :pk AND SK BETWEEN :first AND :last",
            {":pk": _task_pk(task_id), ":first": _ids_sk(first), ":last": _ids_sk(last)},
        )
        ids = [i for item in items for i in _plain(item["ids"])]
        offset = first * IDS_PER_RECORD
        return ids[start - offset : end - offset]

    def list_tasks(
        self, owner: Owner, status: TaskStatus | None, limit: int, next_token: str | None
    ) -> tuple[list[ListedTask], str | None]:
        digest = owner_digest(owner.key)
        if status is None:
            index, pk_name, sk_name, pk_value = OWNER_INDEX, "GSI1PK", "GSI1SK", _owner_pk(digest)
        else:
            index, pk_name, sk_name, pk_value = OWNER_STATUS_INDEX, "GSI2PK", "GSI2SK", _owner_status_pk(digest, status)
        query: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": pk_name},
            "ExpressionAttributeValues": {":pk": pk_value},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if next_token:
            names = TABLE_KEY | {pk_name, sk_name}
            query["ExclusiveStartKey"] = _decode_token(next_token, names, **{pk_name: pk_value})
        page = self._client.query(TableName=self._table_name, **query)
        listed = [self._listed_from_item(item) for item in page["Items"] if not _expired(item)]
        return listed, _encode_token(page.get("LastEvaluatedKey"))

    def change_status(
        self,
        task_id: str,
        to: TaskStatus,
        allowed_from: Iterable[TaskStatus],
        reason: str | None = None,
        require_idle: bool = False,
        outcomes: str | None = None,
    ) -> Task:
        """Move a task to ``to`` if it is in one of ``allowed_from``, with its detail in the same transaction. On a
        finishing status, every device that never started becomes NOT_STARTED and ``outcomes`` (a letter per device)
        is kept beside the task. ``require_idle`` also requires that no device is running."""
        now = _iso(utc_now())
        current = self.get_task(task_id)
        if current is None or current.status not in set(allowed_from):
            raise ConditionFailed(f"task {task_id} is {current.status if current else 'missing'}")
        pk = _task_pk(task_id)
        names = {"#s": "status"}
        values: dict[str, Any] = {":to": to.value, ":from": current.status.value, ":now": now, ":one": 1}
        sets = ["#s = :to", "updatedAt = :now"]
        condition = "#s = :from"
        if to is TaskStatus.IN_PROGRESS:
            sets.append("startedAt = :now")
        if to.finished or require_idle:
            names["#c"] = "counts"
            values[":zero"] = 0
        expires = _epoch(utc_now() + self._retention)
        if to.finished:
            sets += ["completedAt = :now", "#c.NOT_STARTED = #c.NOT_STARTED + #c.PENDING", "#c.PENDING = :zero"]
            sets.append("expiresAt = :expires")
            values[":expires"] = expires
        if require_idle:
            condition += " AND #c.RUNNING = :zero"
        detail_sets = ["#s = :to", "GSI2PK = :gsi2"]
        detail_values: dict[str, Any] = {":to": to.value, ":gsi2": _owner_status_pk(current.owner_key, to)}
        if reason is not None:
            detail_sets.append("statusReason = :reason")
            detail_values[":reason"] = reason
        if to.finished:
            detail_sets += ["completedAt = :now", "expiresAt = :expires"]
            detail_values |= {":now": now, ":expires": expires}
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table_name,
                    "Key": {"PK": pk, "SK": TASK_SK},
                    "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE outcomes" + VERSION_BUMP,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
            {
                "Update": {
                    "TableName": self._table_name,
                    "Key": {"PK": pk, "SK": DETAIL_SK},
                    "UpdateExpression": "SET " + ", ".join(detail_sets),
                    "ConditionExpression": "attribute_exists(PK)",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": detail_values,
                }
            },
        ]
        if outcomes is not None:
            outcome_item = {"PK": pk, "SK": "TASK#OUTCOMES", "letters": outcomes, "expiresAt": expires}
            actions.append({"Put": {"TableName": self._table_name, "Item": outcome_item}})
        self._transact(actions)
        changed = self.get_task(task_id)
        assert changed is not None
        return changed

    # --- batches and devices -------------------------------------------------------------------

    def start_batch(self, batch: Batch, failed: dict[int, str], ending: DeviceStatus = DeviceStatus.FAILED) -> None:
        """Record a batch as started, in one transaction that requires the task to be IN_PROGRESS: its devices with
        a node become RUNNING, and those in ``failed`` (device index -> reason) end at once, as ``ending``
        (FAILED: no node; NOT_STARTED: the batch's time ran out before it was started)."""
        now = _iso(utc_now())
        pk = _task_pk(batch.task_id)
        running = len(batch.nodes)
        failed_items = [
            self._failed_device_item(batch, index, reason, now, status=ending) for index, reason in failed.items()
        ]
        outcomes = ", outcomes = :outcomes" if failed_items else ""
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
                        "expiresAt": self._kept_while_running(),
                    },
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {
                "Update": {
                    "TableName": self._table_name,
                    "Key": {"PK": pk, "SK": TASK_SK},
                    "UpdateExpression": "SET #c.PENDING = #c.PENDING - :n, #c.RUNNING = #c.RUNNING + :r, "
                    "#c.#ended = #c.#ended + :u, updatedAt = :now" + (outcomes or " REMOVE outcomes") + VERSION_BUMP,
                    "ConditionExpression": "#s = :in_progress AND #c.PENDING >= :n",
                    "ExpressionAttributeNames": {"#c": "counts", "#s": "status", "#ended": ending.value},
                    "ExpressionAttributeValues": {
                        ":n": running + len(failed),
                        ":r": running,
                        ":u": len(failed),
                        ":now": now,
                        ":in_progress": TaskStatus.IN_PROGRESS.value,
                        ":one": 1,
                    }
                    | ({":outcomes": [_outcome(item) for item in failed_items]} if failed_items else {}),
                }
            },
        ]
        for item in failed_items:
            actions.append({"Put": {"TableName": self._table_name, "Item": item}})
        self._transact(actions)

    def fail_unsent(self, batch: Batch, failed: dict[str, str]) -> Batch:
        """Take nodes SSM refused (node id -> reason) out of a started batch: their devices end FAILED and are no
        longer counted as running. Answers the batch without them."""
        now = _iso(utc_now())
        pk = _task_pk(batch.task_id)
        kept = {node: index for node, index in batch.nodes.items() if node not in failed}
        failed_items = [
            self._failed_device_item(batch, batch.nodes[node], reason, now, node) for node, reason in failed.items()
        ]
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table_name,
                    "Key": {"PK": pk, "SK": _batch_sk(batch.number)},
                    "UpdateExpression": "SET nodes = :kept",
                    "ConditionExpression": "attribute_not_exists(commandId)",
                    "ExpressionAttributeValues": {":kept": kept},
                }
            },
            {
                "Update": {
                    "TableName": self._table_name,
                    "Key": {"PK": pk, "SK": TASK_SK},
                    "UpdateExpression": "SET #c.RUNNING = #c.RUNNING - :n, #c.FAILED = #c.FAILED + :n, "
                    "updatedAt = :now, outcomes = :outcomes" + VERSION_BUMP,
                    "ConditionExpression": "#c.RUNNING >= :n",
                    "ExpressionAttributeNames": {"#c": "counts"},
                    "ExpressionAttributeValues": {
                        ":n": len(failed),
                        ":now": now,
                        ":one": 1,
                        ":outcomes": [_outcome(item) for item in failed_items],
                    },
                }
            },
        ]
        for item in failed_items:
            put = {"TableName": self._table_name, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}
            actions.append({"Put": put})
        self._transact(actions)
        return replace(batch, nodes=kept)

    def set_batch_command(self, task_id: str, number: int, command_id: str, cut_by_deadline: bool) -> None:
        """Record the SSM command sent for a batch (a write to the batch alone: it never waits on the task's
        per-device writes). The caller then checks that the task is still in progress."""
        values = {":cmd": command_id, ":cut": cut_by_deadline}
        self._update_batch(task_id, number, "SET commandId = :cmd, cutByDeadline = :cut", values)

    def mark_batch_sending(self, task_id: str, number: int) -> tuple[datetime, bool]:
        """Note, before a batch's command is sent, that it is being sent: (since when, whether an earlier attempt
        of the step had already noted it and so may have sent it)."""
        now = _iso(utc_now())
        batch = self._update_batch(
            task_id, number, "SET sendingSince = if_not_exists(sendingSince, :now)", {":now": now}
        )
        since = str(batch["sendingSince"])
        return datetime.fromisoformat(since), since != now

    def set_batch_token(self, task_id: str, number: int, task_token: str) -> None:
        """The workflow now waits for a batch on another token (its step was retried)."""
        self._update_batch(task_id, number, "SET taskToken = :token", {":token": task_token})

    def _update_batch(self, task_id: str, number: int, expression: str, values: dict[str, Any]) -> dict[str, Any]:
        """Update a batch's record, which must exist; answer the record as it is now."""
        return self._update_existing({"PK": _task_pk(task_id), "SK": _batch_sk(number)}, expression, values)

    def _update_existing(
        self, key: dict[str, str], expression: str, values: dict[str, Any], names: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Update an item that must exist (ConditionFailed otherwise); answer the item as it is now."""
        updated: dict[str, Any] = {}
        update: dict[str, Any] = {
            "TableName": self._table_name,
            "Key": key,
            "UpdateExpression": expression,
            "ConditionExpression": "attribute_exists(PK)",
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        if names:
            update["ExpressionAttributeNames"] = names
        self._write(lambda: updated.update(self._client.update_item(**update)["Attributes"]))
        return updated

    def get_batch(self, task_id: str, number: int) -> Batch | None:
        item = self._client.get_item(
            TableName=self._table_name, Key={"PK": _task_pk(task_id), "SK": _batch_sk(number)}, ConsistentRead=True
        ).get("Item")
        return self._batch_from_item(item) if item else None

    def batched_devices(self, task_id: str, first: int, end: int) -> set[int]:
        """The positions of the devices that the batches first..end-1 sent to a managed node: each is running until
        its outcome is recorded. A batch's record is written when it starts, before its command is sent: until the
        command's id is recorded with it, none of its devices runs yet."""
        items = self._query_all(
            "PK = :pk AND SK BETWEEN :first AND :last",
            {":pk": _task_pk(task_id), ":first": _batch_sk(first), ":last": _batch_sk(end - 1)},
            projection="nodes, commandId",
        )
        return {int(index) for item in items if item.get("commandId") for index in item.get("nodes", {}).values()}

    def sent_commands(self, task_id: str, first: int, end: int) -> dict[str, dict[str, int]]:
        """The SSM commands the batches first..end-1 were sent as: command id -> its nodes (node id -> device
        position)."""
        items = self._query_all(
            "PK = :pk AND SK BETWEEN :first AND :last",
            {":pk": _task_pk(task_id), ":first": _batch_sk(first), ":last": _batch_sk(end - 1)},
            projection="nodes, commandId",
        )
        return {
            str(item["commandId"]): {node: int(index) for node, index in item.get("nodes", {}).items()}
            for item in items
            if item.get("commandId")
        }

    def batches(self, task_id: str) -> Iterator[Batch]:
        for item in self._query_prefix(task_id, "BATCH#"):
            yield self._batch_from_item(item)

    def finish_device(self, batch: Batch, index: int, outcome: CommandOutcome) -> bool:
        """Record a running device's outcome and move the task's counts with it, once: a second report of the same
        device changes nothing and answers False."""
        return self.finish_devices([(batch, index, outcome)])

    def finish_devices(self, finished: Sequence[Finished]) -> bool:
        """Record the outcomes of running devices of one task (each by its batch and position) and move the task's
        counts with them, in one transaction: all of them, or none (False) when any of them is recorded already."""
        task_ids = {batch.task_id for batch, _, _ in finished}
        if len(task_ids) != 1:
            raise ValueError(f"one transaction records the devices of one task, not of {len(task_ids)}")
        pk = _task_pk(task_ids.pop())
        now = utc_now()
        devices = [
            self._device_item(
                pk,
                DeviceRun(
                    index=index,
                    device_id=batch.device_at(index),
                    status=outcome.status,
                    reason=outcome.reason,
                    node_id=outcome.node_id,
                    command_id=outcome.command_id,
                    exit_code=outcome.exit_code,
                    started_at=outcome.started_at,
                    ended_at=outcome.ended_at or now,
                    stdout_url=outcome.stdout_url,
                ),
            )
            for batch, index, outcome in sorted(finished, key=lambda device: device[1])
        ]
        moved = Counter(outcome.status.value for _, _, outcome in finished)
        names = {f"#s{n}": status for n, status in enumerate(moved)}
        values: dict[str, Any] = {f":n{n}": count for n, count in enumerate(moved.values())}
        counted = "".join(f", #c.#s{n} = #c.#s{n} + :n{n}" for n in range(len(moved)))
        try:
            self._transact(
                [
                    {
                        "Put": {
                            "TableName": self._table_name,
                            "Item": device,
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    }
                    for device in devices
                ]
                + [
                    {
                        "Update": {
                            "TableName": self._table_name,
                            "Key": {"PK": pk, "SK": TASK_SK},
                            "UpdateExpression": "SET #c.RUNNING = #c.RUNNING - :ended"
                            + counted
                            + ", updatedAt = :now, outcomes = :outcomes"
                            + VERSION_BUMP,
                            "ConditionExpression": "#c.RUNNING >= :ended",
                            "ExpressionAttributeNames": {"#c": "counts"} | names,
                            "ExpressionAttributeValues": values
                            | {
                                ":ended": len(devices),
                                ":one": 1,
                                ":now": _iso(now),
                                ":outcomes": [_outcome(device) for device in devices],
                            },
                        }
                    }
                ]
            )
        except ConditionFailed:
            return False
        return True

    def recorded_devices(self, task_id: str, indexes: Collection[int]) -> set[int]:
        """Which of these positions have an outcome recorded, read strongly consistent (keys only), far cheaper than
        a transaction that would fail: one query over their range when they are close together (a batch's), else
        a BatchGetItem of just them."""
        if not indexes:
            return set()
        pk, wanted = _task_pk(task_id), set(indexes)
        if max(wanted) - min(wanted) < 2 * len(wanted):
            return self.recorded_between(task_id, min(wanted), max(wanted)) & wanted
        found: set[int] = set()
        keys = [{"PK": pk, "SK": _device_sk(index)} for index in sorted(wanted)]
        while keys:
            request = {self._table_name: {"Keys": keys[:100], "ConsistentRead": True, "ProjectionExpression": "SK"}}
            answer = self._client.batch_get_item(RequestItems=request)
            found.update(_device_index(item["SK"]) for item in answer["Responses"].get(self._table_name, []))
            unprocessed = answer.get("UnprocessedKeys", {}).get(self._table_name, {}).get("Keys", [])
            keys = keys[100:] + unprocessed
            if unprocessed:  # DynamoDB throttled part of it: ask again after a jittered pause
                time.sleep(random.uniform(0, CONFLICT_BACKOFF[0]))  # noqa: S311 - jitter, not secrets
        return found

    def recorded_between(self, task_id: str, first: int, last: int) -> set[int]:
        """The positions from ``first`` to ``last`` that have an outcome recorded: one keys-only query."""
        items = self._query_all(
            "PK = :pk AND SK BETWEEN :first AND :last",
            {":pk": _task_pk(task_id), ":first": _device_sk(first), ":last": _device_sk(last)},
            projection="SK",
        )
        return {_device_index(item["SK"]) for item in items}

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

    # --- the change feed -----------------------------------------------------------------------

    @staticmethod
    def read_stream(records: list[dict[str, Any]]) -> list[TaskStateChange]:
        """The changes of tasks' states in a batch of the table's stream records, in order (other records are
        skipped): each with the outcomes of the devices recorded by that change."""
        changes: list[TaskStateChange] = []
        for record in records:
            stream = record.get("dynamodb", {})
            new, old = _image(stream.get("NewImage")), _image(stream.get("OldImage"))
            if not new or new.get("SK") != TASK_SK or not str(new.get("PK", "")).startswith("TASK#"):
                continue
            changes.append(
                TaskStateChange(
                    task_id=new["PK"].removeprefix("TASK#"),
                    sequence=str(stream.get("SequenceNumber", "")),
                    version=new.get("version", 1),
                    status=TaskStatus(new["status"]),
                    previous_status=TaskStatus(old["status"]) if old.get("status") else None,
                    counts=DeviceCounts.of(new.get("counts", {})),
                    previous_counts=DeviceCounts.of(old["counts"]) if old else None,
                    updated_at=moment(new.get("updatedAt", new["createdAt"])),
                    started_at=optional_moment(new.get("startedAt")),
                    completed_at=optional_moment(new.get("completedAt")),
                    outcomes=[
                        RecordedOutcome(
                            device_id=outcome["deviceId"],
                            status=DeviceStatus(outcome["status"]),
                            exit_code=outcome.get("exitCode"),
                            reason=outcome.get("reason"),
                        )
                        for outcome in new.get("outcomes", [])
                    ],
                )
            )
        return changes

    def keep_events(self, task_id: str) -> None:
        """From now on keep the task's progress events too (it has a subscriber who may resume)."""
        self._update_existing({"PK": _task_pk(task_id), "SK": DETAIL_SK}, "SET eventsKept = :yes", {":yes": True})

    def keep_event(self, task_id: str, event_id: int, body: str) -> None:
        """Keep an event (as long as the task): the same event kept twice is one record."""
        item = {
            "PK": _task_pk(task_id),
            "SK": _event_sk(event_id),
            "body": body,
            "expiresAt": self._kept_while_running(),
        }
        self._write(lambda: self._client.put_item(TableName=self._table_name, Item=item))

    def last_event(self, task_id: str) -> str | None:
        """The task's last kept event (its JSON body), if any: one item read."""
        page = self._client.query(
            TableName=self._table_name,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :events)",
            ExpressionAttributeValues={":pk": _task_pk(task_id), ":events": "EVENT#"},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        return str(page["Items"][0]["body"]) if page["Items"] else None

    def events_after(self, task_id: str, after: int) -> list[str]:
        """The kept events of a task after the event ``after``, in order (their JSON bodies)."""
        items = self._query_all(
            "PK = :pk AND SK BETWEEN :first AND :last",
            {":pk": _task_pk(task_id), ":first": _event_sk(after + 1), ":last": _event_sk(10**16 - 1)},
        )
        return [str(item["body"]) for item in items]

    # --- WebSocket connections -----------------------------------------------------------------

    def add_connection(self, connection_id: str, owner: Owner, expires_at: datetime) -> None:
        item: dict[str, Any] = _connection_key(connection_id) | {
            "ownerKey": owner_digest(owner.key),
            "owner": owner.name,
            "expiresAt": _epoch(expires_at),
        }
        self._write(lambda: self._client.put_item(TableName=self._table_name, Item=item))

    def connection_owner(self, connection_id: str) -> str | None:
        """The digest of the owner's key of a connection, None if it is not known (gone or expired)."""
        item = self._connection(connection_id)
        if item is None or _expired(item):
            return None
        return str(item["ownerKey"])

    def subscribe(self, connection_id: str, task_id: str, expires_at: datetime) -> None:
        """Subscribe a connection to a task's events: the task's subscriber record and the connection's list."""
        self._transact(
            [
                {
                    "Put": {
                        "TableName": self._table_name,
                        "Item": {
                            "PK": _task_pk(task_id),
                            "SK": _subscriber_sk(connection_id),
                            "expiresAt": _epoch(expires_at),
                        },
                    }
                },
                {
                    "Update": {
                        "TableName": self._table_name,
                        "Key": _connection_key(connection_id),
                        "UpdateExpression": "ADD tasks :task",
                        "ConditionExpression": "attribute_exists(PK)",
                        "ExpressionAttributeValues": {":task": {task_id}},
                    }
                },
            ]
        )

    def unsubscribe(self, connection_id: str, task_id: str) -> None:
        key = {"PK": _task_pk(task_id), "SK": _subscriber_sk(connection_id)}
        self._write(lambda: self._client.delete_item(TableName=self._table_name, Key=key))

    def remove_connection(self, connection_id: str) -> None:
        """Forget a connection and its subscriptions (a connection already forgotten is no error)."""
        item = self._connection(connection_id)
        for task_id in item.get("tasks", set()) if item else set():
            self.unsubscribe(connection_id, str(task_id))
        key = _connection_key(connection_id)
        self._write(lambda: self._client.delete_item(TableName=self._table_name, Key=key))

    def _connection(self, connection_id: str) -> dict[str, Any] | None:
        found = self._client.get_item(
            TableName=self._table_name, Key=_connection_key(connection_id), ConsistentRead=True
        ).get("Item")
        return _plain(found) if found else None

    def subscribers(self, task_id: str) -> list[str]:
        """The connections subscribed to a task that have not expired."""
        items = self._query_prefix(task_id, "SUBSCRIBER#")
        return [item["SK"].removeprefix("SUBSCRIBER#") for item in items if not _expired(item)]

    # --- webhooks ------------------------------------------------------------------------------

    def add_webhook(self, endpoint: WebhookEndpoint) -> None:
        self._put_new(_webhook_key(endpoint.owner_key, endpoint.id) | self._webhook_fields(endpoint))

    def get_webhook(self, owner_key: str, webhook_id: str) -> WebhookEndpoint | None:
        """One of an owner's endpoints (``owner_key`` is the digest of the owner's key), None if it has none such."""
        key = _webhook_key(owner_key, webhook_id)
        item = self._client.get_item(TableName=self._table_name, Key=key, ConsistentRead=True).get("Item")
        return self._webhook_from_item(item) if item else None

    def list_webhooks(
        self, owner_key: str, limit: int, next_token: str | None
    ) -> tuple[list[WebhookEndpoint], str | None]:
        items, token = self._page(_owner_pk(owner_key), "WEBHOOK#", limit, next_token)
        return [self._webhook_from_item(item) for item in items], token

    def webhooks_of(self, owner_key: str) -> list[WebhookEndpoint]:
        """Every endpoint of an owner."""
        return [self._webhook_from_item(item) for item in self._query_under(_owner_pk(owner_key), "WEBHOOK#")]

    def remove_webhook(self, owner_key: str, webhook_id: str) -> bool:
        """Remove an endpoint; False if the owner had no such endpoint."""
        key = _webhook_key(owner_key, webhook_id)
        try:
            self._write(
                lambda: self._client.delete_item(
                    TableName=self._table_name, Key=key, ConditionExpression="attribute_exists(PK)"
                )
            )
        except ConditionFailed:
            return False
        return True

    def rotate_webhook_secret(
        self, owner_key: str, webhook_id: str, secret: str, previous_until: datetime
    ) -> WebhookEndpoint | None:
        """Give an endpoint a new secret; the old one stays valid until ``previous_until``."""
        try:
            updated = self._update_existing(
                _webhook_key(owner_key, webhook_id),
                "SET previousSecret = secret, secret = :secret, previousSecretUntil = :until",
                {":secret": secret, ":until": _iso(previous_until)},
            )
        except ConditionFailed:
            return None
        return self._webhook_from_item(updated)

    def disable_webhook(self, owner_key: str, webhook_id: str, reason: str) -> None:
        with contextlib.suppress(ConditionFailed):  # removed meanwhile
            self._update_existing(
                _webhook_key(owner_key, webhook_id),
                "SET disabledAt = :now, disabledReason = :reason",
                {":now": _iso(utc_now()), ":reason": reason},
            )

    def add_delivery(self, webhook_id: str, delivery: Delivery) -> None:
        """Log a delivery about to be made (a delivery logged twice stays one)."""
        item: dict[str, Any] = _delivery_key(webhook_id, delivery.created_at, delivery.id) | {
            "eventType": delivery.event_type,
            "eventId": delivery.event_id,
            "taskId": delivery.task_id,
            "status": delivery.status.value,
            "createdAt": _iso(delivery.created_at),
            "attempts": [],
            "expiresAt": _epoch(delivery.created_at + timedelta(days=DELIVERY_LOG_DAYS)),
        }
        with contextlib.suppress(ConditionFailed):
            self._put_new(_present(item))

    def record_attempt(self, webhook_id: str, delivery: Delivery, attempt: Attempt, status: DeliveryStatus) -> None:
        attempt_item = {
            "time": _iso(attempt.time),
            "latencyMs": attempt.latency_ms,
            "statusCode": attempt.status_code,
            "error": attempt.error,
        }
        self._update_existing(
            _delivery_key(webhook_id, delivery.created_at, delivery.id),
            "SET attempts = list_append(attempts, :attempt), #s = :status",
            {":attempt": [_present(attempt_item)], ":status": status.value},
            {"#s": "status"},
        )

    def list_deliveries(self, webhook_id: str, limit: int, next_token: str | None) -> tuple[list[Delivery], str | None]:
        """An endpoint's deliveries, newest first."""
        items, token = self._page(f"WEBHOOK#{webhook_id}", "DELIVERY#", limit, next_token, newest_first=True)
        return [self._delivery_from_item(item) for item in items], token

    # --- helpers -------------------------------------------------------------------------------

    def _query_prefix(self, task_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        return self._query_under(_task_pk(task_id), prefix)

    def _query_under(self, pk: str, prefix: str) -> Iterator[dict[str, Any]]:
        """Every item under ``pk`` whose sort key starts with ``prefix``."""
        return self._query_all("PK = :pk AND begins_with(SK, :prefix)", {":pk": pk, ":prefix": prefix})

    def _put_new(self, item: dict[str, Any]) -> None:
        """Write an item that must not exist yet (ConditionFailed otherwise)."""
        put = {"TableName": self._table_name, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}
        self._write(lambda: self._client.put_item(**cast(Any, put)))

    def _page(
        self, pk: str, prefix: str, limit: int, next_token: str | None, newest_first: bool = False
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the items under ``pk`` whose sort key starts with ``prefix``, and the next page's token."""
        query: dict[str, Any] = {
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": {":pk": pk, ":prefix": prefix},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
            "Limit": limit,
        }
        if next_token:
            query["ExclusiveStartKey"] = _decode_token(next_token, TABLE_KEY, prefix, PK=pk)
        page = self._client.query(TableName=self._table_name, **query)
        return page["Items"], _encode_token(page.get("LastEvaluatedKey"))

    def _query_all(
        self, condition: str, values: dict[str, Any], projection: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a strongly consistent query, page after page (only the ``projection`` attributes if given:
        less to transfer, the same capacity)."""
        query: dict[str, Any] = {
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        if projection:
            query["ProjectionExpression"] = projection
        while True:
            page = self._client.query(TableName=self._table_name, **query)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _transact(self, actions: list[dict[str, Any]]) -> None:
        self._write(lambda: self._client.transact_write_items(TransactItems=cast(Any, actions)))

    @staticmethod
    def _write(call: Any) -> None:
        """Make a write (again while it conflicts with other transactions on its items, ``retry_conflicts``); a
        failed condition is final (ConditionFailed)."""
        try:
            retry_conflicts(call)
        except ClientError as error:
            if _is_condition_failure(error):
                raise ConditionFailed(str(error)) from error
            raise

    def _failed_device_item(
        self,
        batch: Batch,
        index: int,
        reason: str,
        now: str | None,
        node_id: str | None = None,
        status: DeviceStatus = DeviceStatus.FAILED,
    ) -> dict[str, Any]:
        """The record of a batch's device that ends without running: FAILED (no node, or SSM refused its node), or
        NOT_STARTED (its batch's time ran out first)."""
        run = DeviceRun(index=index, device_id=batch.device_at(index), status=status, reason=reason, node_id=node_id)
        return self._device_item(_task_pk(batch.task_id), run) | {"endedAt": now}

    def _device_item(self, pk: str, run: DeviceRun) -> dict[str, Any]:
        fields = {
            "PK": pk,
            "SK": _device_sk(run.index),
            "expiresAt": self._kept_while_running(),
            "deviceId": run.device_id,
            "status": run.status.value,
            "reason": run.reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore") if run.reason else None,
            "nodeId": run.node_id,
            "commandId": run.command_id,
            "exitCode": run.exit_code,
            "startedAt": _iso(run.started_at),
            "endedAt": _iso(run.ended_at),
            "stdoutUrl": run.stdout_url,
        }
        return _present(fields)

    @classmethod
    def _task_from_records(cls, items: list[dict[str, Any]]) -> Task | None:
        state = next((item for item in items if item["SK"] == TASK_SK), None)
        detail = next((item for item in items if item["SK"] == DETAIL_SK), None)
        if not state or not detail or _expired(state):
            return None
        return cls._task_from_items(state, detail)

    @staticmethod
    def _task_from_items(state: dict[str, Any], detail: dict[str, Any]) -> Task:
        state, detail = _plain(state), _plain(detail)
        return Task(
            id=state["PK"].removeprefix("TASK#"),
            kind=detail["kind"],
            owner=detail["owner"],
            owner_key=detail["ownerKey"],
            status=TaskStatus(state["status"]),
            status_reason=detail.get("statusReason"),
            settings=TaskSettings.of(detail["settings"]),
            device_count=detail["deviceCount"],
            counts=DeviceCounts.of(state.get("counts", {})),
            execution_arn=state.get("executionArn"),
            created_at=moment(state["createdAt"]),
            updated_at=moment(state.get("updatedAt", state["createdAt"])),
            started_at=optional_moment(state.get("startedAt")),
            completed_at=optional_moment(state.get("completedAt")),
            version=state.get("version", 1),
            events_kept=detail.get("eventsKept", False),
        )

    @staticmethod
    def _listed_from_item(item: dict[str, Any]) -> ListedTask:
        item = _plain(item)
        return ListedTask(
            id=item["PK"].removeprefix("TASK#"),
            kind=item["kind"],
            status=TaskStatus(item["status"]),
            status_reason=item.get("statusReason"),
            script_url=item["settings"]["script_url"],
            device_count=item["deviceCount"],
            created_at=moment(item["createdAt"]),
            completed_at=optional_moment(item.get("completedAt")),
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
            sending_since=optional_moment(item.get("sendingSince")),
        )

    @staticmethod
    def _webhook_fields(endpoint: WebhookEndpoint) -> dict[str, Any]:
        fields = {
            "id": endpoint.id,
            "ownerKey": endpoint.owner_key,
            "url": endpoint.url,
            "events": [event.value for event in endpoint.events],
            "secret": endpoint.secret,
            "createdAt": _iso(endpoint.created_at),
        }
        return fields

    @staticmethod
    def _webhook_from_item(item: dict[str, Any]) -> WebhookEndpoint:
        item = _plain(item)
        return WebhookEndpoint(
            id=item["id"],
            owner_key=item["ownerKey"],
            url=item["url"],
            events=[TaskEventType(event) for event in item["events"]],
            secret=item["secret"],
            previous_secret=item.get("previousSecret"),
            previous_secret_until=optional_moment(item.get("previousSecretUntil")),
            created_at=moment(item["createdAt"]),
            disabled_at=optional_moment(item.get("disabledAt")),
            disabled_reason=item.get("disabledReason"),
        )

    @staticmethod
    def _delivery_from_item(item: dict[str, Any]) -> Delivery:
        item = _plain(item)
        return Delivery(
            id=item["SK"].rsplit("#", 1)[1],
            event_type=item["eventType"],
            event_id=item.get("eventId"),
            task_id=item.get("taskId"),
            status=DeliveryStatus(item["status"]),
            created_at=moment(item["createdAt"]),
            attempts=[
                Attempt(
                    time=moment(attempt["time"]),
                    status_code=attempt.get("statusCode"),
                    latency_ms=attempt["latencyMs"],
                    error=attempt.get("error"),
                )
                for attempt in item.get("attempts", [])
            ],
        )

    @staticmethod
    def _device_from_item(item: dict[str, Any]) -> DeviceRun:
        item = _plain(item)
        return DeviceRun(
            index=_device_index(item["SK"]),
            device_id=item["deviceId"],
            status=DeviceStatus(item["status"]),
            reason=item.get("reason"),
            node_id=item.get("nodeId"),
            command_id=item.get("commandId"),
            exit_code=item.get("exitCode"),
            started_at=optional_moment(item.get("startedAt")),
            ended_at=optional_moment(item.get("endedAt")),
            stdout_url=item.get("stdoutUrl"),
        )
