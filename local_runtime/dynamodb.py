"""DynamoDB as DynamoDB behaves, on top of moto's backend: atomic requests, transactions that conflict, and limits.

- moto's backend is not safe under concurrent requests, so each request touches the tables under one lock (the
  server still takes requests concurrently, and a transaction's prepare phase runs outside that lock).
- A transaction holds its items from prepare to commit (``transaction_seconds``, as DynamoDB's two phases take
  time). A TransactWriteItems that touches an item another transaction holds is cancelled with the reason
  ``TransactionConflict``; a PutItem, UpdateItem or DeleteItem on such an item fails with
  TransactionConflictException. Neither is retried by the AWS SDKs. ``conflict_rate`` rejects that share of
  transactions and single-item writes as conflicting, whatever the timing, so tests need not depend on load.
- A transaction's conditions are all checked before any of its writes (moto copies whole tables instead), and a
  write that fails midway undoes the ones before it; it takes at most 100 actions, one per item, of at most 4 MB
  together; an item is at most 400 KB.
- Item sizes follow DynamoDB's rules (``item_size``), for the capacity the meter counts.
- A table's stream gets one record per write that changed an item, once the write (or the whole transaction) has
  succeeded, with the item's images before and after, as DynamoDB Streams writes it. moto's own records are
  dropped: it records writes that change nothing, an UpdateItem that creates an item twice (the first with its key
  only), and the writes of a transaction it then undoes. Shard iterators expire 15 minutes after they are issued.

Source: DynamoDB Developer Guide, "Transaction conflict handling in DynamoDB", "Amazon DynamoDB Transactions:
How it works" and "Change data capture for DynamoDB Streams"; API reference of TransactWriteItems, and of
DynamoDB Streams' GetShardIterator and GetRecords.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    DynamodbException,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import StreamRecord, StreamShard
from moto.dynamodbstreams.models import DynamoDBStreamsBackend

LOCK = threading.RLock()
MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
CONFLICT = ("TransactionConflict", "Transaction is ongoing for the item", None)
_READS = ("get_item", "query", "scan")
_WRITES = ("put_item", "update_item", "delete_item")
STREAM_EVENT_VERSION = "1.1"
SHARD_ITERATOR_SECONDS = 15 * 60
"""How long a shard iterator can be used (DynamoDB Streams API reference, GetShardIterator)"""


class ExpiredIteratorException(DynamodbException):
    error_type = "com.amazonaws.dynamodb.v20120810#ExpiredIteratorException"

    def __init__(self) -> None:
        super().__init__(self.error_type, "Iterator expired: a shard iterator expires 15 minutes after it is issued")


class TransactionConflictException(DynamodbException):
    error_type = "com.amazonaws.dynamodb.v20120810#TransactionConflictException"

    def __init__(self) -> None:
        super().__init__(
            self.error_type, "Operation was rejected because there is an ongoing transaction for the item."
        )


@dataclass
class Rules:
    """How strict the local DynamoDB is; ``configure`` sets it for the whole process."""

    transaction_seconds: float = 0.0
    conflict_rate: float = 0.0
    random: random.Random = field(default_factory=random.Random)
    held: set[tuple[str, str]] = field(default_factory=set)
    """Items held by transactions in flight, as (table, key)"""
    held_lock: threading.Lock = field(default_factory=threading.Lock)
    write_listeners: list[Callable[[int, int, bool], None]] = field(default_factory=list)
    """Called with (size before, size after, in a transaction) for each item written"""
    conflicts: int = 0
    """Requests rejected as conflicting so far"""


RULES = Rules()


def configure(transaction_ms: float = 0.0, conflict_rate: float = 0.0, seed: int | None = None) -> None:
    RULES.transaction_seconds = transaction_ms / 1000
    RULES.conflict_rate = conflict_rate
    RULES.random.seed(seed)


def _identity(table: str, key: dict[str, Any]) -> tuple[str, str]:
    return table, json.dumps(key, sort_keys=True, default=str)


def item_key(backend: DynamoDBBackend, table_name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """The primary key of an item, from its attributes."""
    table = backend.get_table(table_name)
    key = {table.hash_key_attr: attributes[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attributes[table.range_key_attr]
    return key


def _injected() -> bool:
    return RULES.conflict_rate > 0 and RULES.random.random() < RULES.conflict_rate


# --- sizes -------------------------------------------------------------------------------------------


def _number_size(text: str) -> int:
    digits = str(Decimal(text).normalize()).lstrip("-").replace(".", "").lstrip("0").split("E")[0] or "0"
    return (len(digits) + 1) // 2 + 1


def value_size(value: DynamoType) -> int:
    """A value's size by DynamoDB's rules (Developer Guide, "Item sizes and formats")."""
    kind, raw = value.type, value.value
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":
        return _number_size(str(raw))
    if kind == "B":
        return len(raw) if isinstance(raw, bytes) else len(str(raw)) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + value_size(DynamoType(v) if not isinstance(v, DynamoType) else v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(DynamoType(v)) for k, v in raw.items())
    member = kind[0]
    return sum(value_size(DynamoType({member: v})) for v in raw)


def item_size(item: Item | None) -> int:
    if item is None:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.attrs.items())


# --- the backend's operations ------------------------------------------------------------------------


_original: dict[str, Any] = {}


def _stored(backend: DynamoDBBackend, table: str, key: dict[str, Any]) -> Item | None:
    """A copy of the item as stored now (None if there is none)."""
    try:
        item: Item | None = copy.deepcopy(_original["get_item"](backend, table, key))
    except DynamodbException:
        return None
    return item


def _notify(before: int, after: int, transactional: bool) -> None:
    for listener in RULES.write_listeners:
        listener(before, after, transactional)


def _single_write(name: str) -> Callable[..., Any]:
    original = _original[name]

    @functools.wraps(original)
    def write(self: DynamoDBBackend, table_name: str, *args: Any, **kwargs: Any) -> Any:
        attributes = args[0] if args else kwargs.get("item_attrs") or kwargs["key"]
        key = item_key(self, table_name, attributes) if name == "put_item" else attributes
        with RULES.held_lock:
            if _identity(table_name, key) in RULES.held or _injected():
                RULES.conflicts += 1
                raise TransactionConflictException()
        with LOCK:
            before = _stored(self, table_name, key)
            result = original(self, table_name, *args, **kwargs)
            after = _stored(self, table_name, key)
            _notify(item_size(before), item_size(after), False)
            _record_change(self, table_name, before, after)
        return result

    return write


def _read(name: str) -> Callable[..., Any]:
    original = _original[name]

    @functools.wraps(original)
    def read(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        with LOCK:
            return original(self, *args, **kwargs)

    return read


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """Claim every item, hold them for the prepare phase, then check every condition and write, or nothing."""
    if len(transact_items) > MAX_TRANSACTION_ITEMS:
        raise TooManyTransactionsException()
    if len(json.dumps(transact_items, default=str).encode()) > MAX_TRANSACTION_BYTES:
        raise MockValidationException("Transaction request size exceeds the 4 MB limit")
    operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    identities: list[tuple[str, str]] = []
    for item in transact_items:
        op_type, op = next(iter(item.items()))
        with LOCK:
            key = item_key(self, op["TableName"], op["Item"]) if op_type == "Put" else op["Key"]
        identity = _identity(op["TableName"], key)
        if identity in identities:
            raise MultipleTransactionsException()
        identities.append(identity)
        operations.append((op_type, op, key))
    with RULES.held_lock:
        conflicts = [identity in RULES.held for identity in identities]
        if any(conflicts) or _injected():
            RULES.conflicts += 1
            if not any(conflicts):
                conflicts[RULES.random.randrange(len(conflicts))] = True
            raise TransactionCanceledException([CONFLICT if c else (None, None, None) for c in conflicts])
        RULES.held.update(identities)
    try:
        if RULES.transaction_seconds:
            time.sleep(RULES.transaction_seconds)
        with LOCK:
            _commit(self, operations)
    finally:
        with RULES.held_lock:
            RULES.held.difference_update(identities)


def _commit(self: DynamoDBBackend, operations: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """All conditions first, then all writes. A transaction touches each item once, so no condition can depend on
    another of its writes, and checking first is the same as checking as one goes."""
    errors: list[tuple[str | None, str | None, None]] = []
    for _, op, key in operations:
        condition = op.get("ConditionExpression")
        if condition is not None:
            check = get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            )
            if not check.expr(_original["get_item"](self, op["TableName"], key)):
                errors.append(("ConditionalCheckFailed", "The conditional request failed", None))
                continue
        errors.append((None, None, None))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)
    written: list[tuple[str, dict[str, Any], Item | None]] = []
    changes: list[tuple[str, Item | None, Item | None]] = []
    try:
        for op_type, op, key in operations:
            table = op["TableName"]
            if op_type == "ConditionCheck":
                continue
            previous = _stored(self, table, key)
            written.append((table, key, previous))
            if op_type == "Put":
                _original["put_item"](self, table, op["Item"])
            elif op_type == "Update":
                _original["update_item"](
                    self,
                    table,
                    key,
                    update_expression=op["UpdateExpression"],
                    condition_expression=None,
                    expression_attribute_names=op.get("ExpressionAttributeNames") or {},
                    expression_attribute_values=op.get("ExpressionAttributeValues") or {},
                )
            elif op_type == "Delete":
                _original["delete_item"](self, table, key)
            changes.append((table, previous, _stored(self, table, key)))
    except Exception:
        for table, key, previous in reversed(written):  # all or nothing: undo what was written
            if previous is None:
                _original["delete_item"](self, table, key)
            else:
                _original["put_item"](self, table, previous.to_json()["Attributes"])
        raise
    for table, before, after in changes:
        _notify(item_size(before), item_size(after), True)
        _record_change(self, table, before, after)


# --- streams -----------------------------------------------------------------------------------------


def _record_change(backend: DynamoDBBackend, table_name: str, old: Item | None, new: Item | None) -> None:
    """The stream record of one item's change, appended to its table's stream (if it has one): none for a write that
    changed nothing, as DynamoDB Streams records only changes. Called under LOCK, so records are in write order."""
    table = backend.get_table(table_name)
    shard = table.stream_shard
    if shard is None or _attributes(old) == _attributes(new):
        return
    event_name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
    view_type = (table.stream_specification or {})["StreamViewType"]
    sequence_number = shard.starting_sequence_number + len(shard.items)
    record = StreamRecord(table, view_type, event_name, old, new, sequence_number)
    record.record.update(eventVersion=STREAM_EVENT_VERSION, awsRegion=backend.region_name)
    details = record.record["dynamodb"]
    # "in UNIX epoch time format and rounded down to the closest second" (DynamoDB Streams API reference)
    details["ApproximateCreationDateTime"] = details["ApproximateCreationDateTime"].replace(microsecond=0)
    keys = sum(len(name.encode()) + value_size(DynamoType(value)) for name, value in details["Keys"].items())
    images = [item for name, item in (("NewImage", new), ("OldImage", old)) if name in details]
    details["SizeBytes"] = keys + sum(item_size(item) for item in images)
    shard.items.append(record)


def _attributes(item: Item | None) -> dict[str, Any] | None:
    return None if item is None else item.to_json()["Attributes"]


def _no_stream_record(self: StreamShard, old: Item | None, new: Item | None) -> None:
    """moto's own stream records, replaced by _record_change's."""


_iterators_issued: dict[str, float] = {}
"""Each shard iterator moto has issued (ARN) -> when (monotonic seconds)"""


def _get_shard_iterator(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_shard_iterator(self: DynamoDBStreamsBackend, *args: Any, **kwargs: Any) -> Any:
        with LOCK:
            iterator = original(self, *args, **kwargs)
            _iterators_issued[iterator.arn] = time.monotonic()
        return iterator

    return get_shard_iterator


def _get_records(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_records(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> Any:
        with LOCK:
            now = time.monotonic()
            for arn in [arn for arn, issued in _iterators_issued.items() if now - issued > SHARD_ITERATOR_SECONDS]:
                del _iterators_issued[arn]
                self.shard_iterators.pop(arn, None)
            if iterator_arn not in self.shard_iterators:
                raise ExpiredIteratorException()
            result = original(self, iterator_arn, limit)
            _iterators_issued[result["NextShardIterator"]] = now
        return result

    return get_records


def install() -> None:
    """Make moto's DynamoDB behave as above, for this whole process (idempotent)."""
    if _original:
        return
    for name in (*_READS, *_WRITES):
        _original[name] = getattr(DynamoDBBackend, name)
    for name in _READS:
        setattr(DynamoDBBackend, name, _read(name))
    for name in _WRITES:
        setattr(DynamoDBBackend, name, _single_write(name))
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    StreamShard.add = _no_stream_record  # type: ignore[method-assign]
    streams = DynamoDBStreamsBackend
    streams.get_shard_iterator = _get_shard_iterator(streams.get_shard_iterator)  # type: ignore[method-assign]
    streams.get_records = _get_records(streams.get_records)  # type: ignore[method-assign]
