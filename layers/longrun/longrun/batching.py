"""How a task's devices are cut into batches (one SSM command each) and how its limits resolve: pure functions that
the workflow plans with and the API reads the batches by."""

from __future__ import annotations

import math

from longrun.models import MAX_BATCH_SIZE, TaskSettings


def resolve_limit(value: int | str, total: int) -> int:
    """A limit given as a number or as a percentage of ``total`` devices."""
    if isinstance(value, str):
        return total * int(value.rstrip("%")) // 100
    return value


def concurrency_limit(settings: TaskSettings, total: int) -> int:
    return max(1, min(resolve_limit(settings.max_concurrency, total), total))


def error_limit(settings: TaskSettings, total: int) -> int | None:
    return None if settings.max_errors is None else resolve_limit(settings.max_errors, total)


def batch_plan(device_count: int, max_concurrency: int, timeout_seconds: int, grace_seconds: int) -> dict[str, int]:
    """How to fan out: how many devices a batch (one SSM command, all its devices at once) holds, how many batches
    run at once, and how long to wait for one batch: its longest possible run, and ``grace_seconds`` for SSM's last
    report. Never more than ``max_concurrency`` devices at a time."""
    size = batch_size(max_concurrency)
    return {
        "batchSize": size,
        "batchCount": math.ceil(device_count / size),
        "batchesAtOnce": max(1, max_concurrency // size),
        "batchWaitSeconds": timeout_seconds + grace_seconds,
    }


def batch_size(max_concurrency: int) -> int:
    """Devices per batch: a batch's devices all start at once, and one SSM command takes at most 50 nodes."""
    return min(max_concurrency, MAX_BATCH_SIZE)


def task_batch_size(settings: TaskSettings, device_count: int) -> int:
    """How many devices each batch of a task holds (the last may hold fewer)."""
    return batch_size(concurrency_limit(settings, device_count))


def batch_range(number: int, size: int, device_count: int) -> tuple[int, int]:
    """The positions start..end-1 of a batch's devices in the task."""
    return number * size, min((number + 1) * size, device_count)
