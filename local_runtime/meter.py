"""What a run costs, counted as AWS would bill it: API calls by service and operation (at the edge), Lambda
invocations and their duration (at the bridge), Step Functions state transitions (every state entered, child
executions of a Distributed Map included) and DynamoDB capacity units (from the size of each item read or
written). ``GET /_local/meter`` on the edge answers the counts; ``POST /_local/meter/reset`` zeroes them. Calls and
DynamoDB capacity are also counted by caller (a function by its logical id, ``devices``, ``administrator``), so a
feature's own share of the bill (push, for one) can be told apart.

DynamoDB units follow DynamoDB's rules, with item sizes as DynamoDB measures them: a write costs one unit per KB of
the larger of the item before and after, twice that inside a transaction (a cancelled one costs nothing here); a
read one unit per 4 KB read, every read counted as strongly consistent. A condition's read inside a write is part
of the write.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

from local_runtime import dynamodb

_lock = threading.Lock()
calls: Counter[str] = Counter()
lambda_invocations: Counter[str] = Counter()
lambda_milliseconds: Counter[str] = Counter()
capacity: Counter[str] = Counter()
transitions: Counter[str] = Counter()
calls_by_caller: Counter[str] = Counter()
capacity_by_caller: Counter[str] = Counter()
_caller = threading.local()


@contextmanager
def attributed_to(who: str) -> Iterator[None]:
    """Count the DynamoDB capacity the calls made inside use (in this thread) to ``who`` as well."""
    previous = getattr(_caller, "who", None)
    _caller.who = who
    try:
        yield
    finally:
        _caller.who = previous


def _count_capacity(kind: str, units: int) -> None:
    with _lock:
        capacity[kind] += units
        capacity_by_caller[f"{getattr(_caller, 'who', None) or 'unattributed'}:{kind}"] += units


def count_call(service: str, operation: str, who: str, times: int = 1) -> None:
    with _lock:
        calls[f"{service}:{operation}"] += times
        calls_by_caller[f"{who}:{service}:{operation}"] += times


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
            "dynamodb": dict(capacity) | {"transactionConflicts": dynamodb.RULES.conflicts},
            "stateTransitions": sum(transitions.values()),
            "stateTransitionsByType": dict(transitions),
            "byCaller": {"calls": dict(calls_by_caller), "dynamodb": dict(capacity_by_caller)},
        }


def reset() -> None:
    with _lock:
        for counter in (
            calls,
            lambda_invocations,
            lambda_milliseconds,
            capacity,
            transitions,
            calls_by_caller,
            capacity_by_caller,
        ):
            counter.clear()
        dynamodb.RULES.conflicts = 0


def _on_write(before: int, after: int, transactional: bool) -> None:
    _count_capacity("writeUnits", _write_units(before, after) * (2 if transactional else 1))


def _write_units(before: int, after: int) -> int:
    return max(1, math.ceil(max(before, after) / 1024))


def _read_units(size: int) -> int:
    return max(1, math.ceil(size / 4096))


def _metered_read(name: str, original: Any) -> Any:
    @functools.wraps(original)
    def read(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        items = [result] if name == "get_item" else result[0]
        size = sum(dynamodb.item_size(item) for item in items)
        _count_capacity("readUnits", _read_units(size))
        return result

    return read


def _metered_transaction(original: Any) -> Any:
    @functools.wraps(original)
    def transact(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            capacity["transactWriteItems"] += 1
        return original(self, *args, **kwargs)

    return transact


def install() -> None:
    """Count DynamoDB capacity and state transitions from here on (idempotent; makes DynamoDB strict first)."""
    if getattr(EventManager.add_event, "_metered", False):
        return
    dynamodb.install()
    dynamodb.RULES.write_listeners.append(_on_write)
    for name in ("get_item", "query", "scan"):
        setattr(DynamoDBBackend, name, _metered_read(name, getattr(DynamoDBBackend, name)))
    DynamoDBBackend.transact_write_items = _metered_transaction(DynamoDBBackend.transact_write_items)  # type: ignore[method-assign]
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
