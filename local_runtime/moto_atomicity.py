"""DynamoDB in moto is not safe under concurrent writers: a transaction backs the table up, writes item by item and
restores the backup when a condition fails, so two transactions at once can lose or repeat each other's writes.
DynamoDB itself makes each write and each transaction atomic; this makes moto's backend do the same by letting one
request at a time touch the tables."""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

_LOCK = threading.RLock()
_OPERATIONS = (
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "transact_get_items",
    "batch_get_item",
    "query",
    "scan",
)


def make_dynamodb_atomic() -> None:
    """Serialise moto's DynamoDB operations (idempotent)."""
    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_serialised", False):
            continue

        @functools.wraps(original)
        def serialised(self: DynamoDBBackend, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return _original(self, *args, **kwargs)

        serialised._serialised = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, serialised)
