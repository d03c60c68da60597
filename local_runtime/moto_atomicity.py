"""DynamoDB in moto is not safe under concurrent writers: a transaction backs up whole tables, writes item by item
and restores the backups when a condition fails, so two transactions at once can lose or repeat each other's
writes, and every transaction costs a copy of the table. DynamoDB itself makes each write and each transaction
atomic; this makes moto's backend do the same by letting one request at a time touch the tables, and checks a
transaction's conditions before it writes anything instead of copying tables."""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
)
from moto.dynamodb.models import DynamoDBBackend

LOCK = threading.RLock()
_OPERATIONS = (
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "transact_get_items",
    "batch_get_item",
    "query",
    "scan",
)


def item_key(backend: DynamoDBBackend, table_name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """The primary key of an item, from its attributes."""
    table = backend.get_table(table_name)
    key = {table.hash_key_attr: attributes[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attributes[table.range_key_attr]
    return key


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """All conditions first, then all writes. DynamoDB refuses two operations on one item in a transaction, so no
    condition can depend on another operation's write, and checking first is the same as checking as one goes."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    planned: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    errors: list[tuple[str | None, str | None, None]] = []
    for item in transact_items:
        op_type, op = next(iter(item.items()))
        key = item_key(self, op["TableName"], op["Item"]) if op_type == "Put" else op["Key"]
        identity = (op["TableName"], str(sorted(key.items())))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        condition = op.get("ConditionExpression")
        if condition is not None:
            check = get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            )
            if not check.expr(self.get_item(op["TableName"], key)):
                errors.append(("ConditionalCheckFailed", "The conditional request failed", None))
                continue
        errors.append((None, None, None))
        planned.append((op_type, op, key))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)
    for op_type, op, key in planned:
        names, values = op.get("ExpressionAttributeNames") or {}, op.get("ExpressionAttributeValues") or {}
        if op_type == "Put":
            self.put_item(op["TableName"], op["Item"])
        elif op_type == "Update":
            self.update_item(
                op["TableName"],
                key,
                update_expression=op["UpdateExpression"],
                condition_expression=None,
                expression_attribute_names=names,
                expression_attribute_values=values,
            )
        elif op_type == "Delete":
            self.delete_item(op["TableName"], key)


def make_dynamodb_atomic() -> None:
    """Serialise moto's DynamoDB operations and replace its transactions (idempotent)."""
    if getattr(DynamoDBBackend.transact_write_items, "_serialised", False):
        return
    replacements = {name: getattr(DynamoDBBackend, name) for name in _OPERATIONS}
    replacements["transact_write_items"] = _transact_write_items
    for name, original in replacements.items():

        @functools.wraps(original)
        def serialised(self: DynamoDBBackend, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with LOCK:
                return _original(self, *args, **kwargs)

        serialised._serialised = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, serialised)
