"""What a run costs, counted as AWS would bill it: API calls by service and operation (at the edge), Lambda
invocations and their duration (at the bridge), Step Functions state transitions (every state entered, child
executions of a Distributed Map included) and DynamoDB capacity units (from the size of each item read or
written). ``GET /_local/meter`` on the edge answers the counts; ``POST /_local/meter/reset`` zeroes them.

DynamoDB units follow DynamoDB's rules: a write costs one unit per KB of the larger of the item before and after,
twice that inside a transaction; a read one unit per 4 KB read, every read counted as strongly consistent.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

from local_runtime import moto_atomicity

_lock = threading.Lock()
calls: Counter[str] = Counter()
lambda_invocations: Counter[str] = Counter()
lambda_milliseconds: Counter[str] = Counter()
capacity: Counter[str] = Counter()
transitions: Counter[str] = Counter()


def count_call(service: str, operation: str) -> None:
    with _lock:
        calls[f"{service}:{operation}"] += 1


def count_invocation(function: str, milliseconds: float) -> None:
    with _lock:
        lambda_invocations[function] += 1
        lambda_milliseconds[function] += math.ceil(milliseconds)


def snapshot() -> dict[str, Any]:
    with _lock:
        return {
            "calls": dict(calls),
            "lambdaInvocations": dict(lambda_invocations),
            "lambdaMilliseconds": dict(lambda_milliseconds),
            "dynamodb": dict(capacity),
            "stateTransitions": sum(transitions.values()),
            "stateTransitionsByType": dict(transitions),
        }


def reset() -> None:
    with _lock:
        for counter in (calls, lambda_invocations, lambda_milliseconds, capacity, transitions):
            counter.clear()


_unmetered_get_item: Any = None
_nested = threading.local()
"""A call the backend makes to itself (a condition's read inside a write) is part of the outer call's bill."""


def _item_size(backend: DynamoDBBackend, table: str, key: dict[str, Any]) -> int:
    try:
        item = _unmetered_get_item(backend, table, key)
    except Exception:  # noqa: BLE001 - a missing table or item weighs nothing
        return 0
    return int(item.size()) if item is not None else 0


def _write_units(before: int, after: int) -> int:
    return max(1, math.ceil(max(before, after) / 1024))


def _read_units(size: int) -> int:
    return max(1, math.ceil(size / 4096))


def _metered(name: str, original: Any) -> Any:
    @functools.wraps(original)
    def wrapper(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        if getattr(_nested, "active", False):
            return original(self, *args, **kwargs)
        _nested.active = True
        try:
            with moto_atomicity.LOCK:  # the sizes before and after belong to this very write
                return _measure(self, args, kwargs)
        finally:
            _nested.active = False

    def _measure(self: DynamoDBBackend, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name == "transact_write_items":
            items = args[0] if args else kwargs["transact_items"]
            keys = []
            for item in items:
                _, op = next(iter(item.items()))
                key = moto_atomicity.item_key(self, op["TableName"], op["Item"]) if "Item" in op else op["Key"]
                keys.append((op["TableName"], key, _item_size(self, op["TableName"], key)))
            try:
                return original(self, *args, **kwargs)
            finally:
                units = sum(2 * _write_units(before, _item_size(self, t, k)) for t, k, before in keys)
                with _lock:
                    capacity["writeUnits"] += units
                    capacity["transactWriteItems"] += 1
        if name in ("put_item", "update_item", "delete_item"):
            table_name = args[0] if args else kwargs["table_name"]
            attributes: dict[str, Any] = args[1] if len(args) > 1 else kwargs.get("item_attrs") or kwargs["key"]
            key = moto_atomicity.item_key(self, table_name, attributes) if name == "put_item" else attributes
            before = _item_size(self, table_name, key)
            try:
                return original(self, *args, **kwargs)
            finally:
                with _lock:
                    capacity["writeUnits"] += _write_units(before, _item_size(self, table_name, key))
        result = original(self, *args, **kwargs)
        if name == "get_item":
            with _lock:
                capacity["readUnits"] += _read_units(int(result.size()) if result is not None else 0)
        elif name in ("query", "scan"):
            items = result[0]
            with _lock:
                capacity["readUnits"] += _read_units(sum(int(item.size()) for item in items))
        return result

    return wrapper


def install() -> None:
    """Count DynamoDB capacity and state transitions from here on (idempotent; after make_dynamodb_atomic)."""
    global _unmetered_get_item
    if getattr(EventManager.add_event, "_metered", False):
        return
    moto_atomicity.make_dynamodb_atomic()
    _unmetered_get_item = DynamoDBBackend.get_item
    for name in ("get_item", "put_item", "update_item", "delete_item", "transact_write_items", "query", "scan"):
        wrapped = _metered(name, getattr(DynamoDBBackend, name))
        setattr(DynamoDBBackend, name, wrapped)
    original_add = EventManager.add_event

    @functools.wraps(original_add)
    def add_event(self: EventManager, context: Any, event_type: Any, *args: Any, **kwargs: Any) -> int:
        name = str(getattr(event_type, "value", event_type))
        if name.endswith("StateEntered"):
            with _lock:
                transitions[name] += 1
        return int(original_add(self, context, event_type, *args, **kwargs))

    add_event._metered = True  # type: ignore[attr-defined]
    EventManager.add_event = add_event  # type: ignore[method-assign]
