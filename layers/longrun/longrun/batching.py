"""How a task's devices are cut into batches (one SSM command each) and how its limits resolve: pure functions that
the workflow plans with and the API reads the batches by."""

from __future__ import annotations

import math

from longrun.records import MAX_BATCH_SIZE, TaskSettings

IDLE_SHARE = 10
"""At most 1/IDLE_SHARE of max-concurrency's slots may be left unshared among a task's commands"""


def resolve_limit(value: int | str, total: int) -> int:
    """A limit given as a number or as a percentage of ``total`` devices."""
    if isinstance(value, str):
        return total * int(value.rstrip("%")) // 100
    return value


def concurrency_limit(settings: TaskSettings, total: int) -> int:
    return max(1, min(resolve_limit(settings.max_concurrency, total), total))


def error_limit(settings: TaskSettings, total: int) -> int | None:
    return None if settings.max_errors is None else resolve_limit(settings.max_errors, total)


def batch_plan(
    device_count: int, max_concurrency: int, timeout_seconds: int, grace_seconds: int, *, rolling: bool = True
) -> dict[str, int]:
    """How to fan out, never more than ``max_concurrency`` devices running at once: how many devices a batch (one SSM
    command) holds, how many of them SSM runs at once (the command's MaxConcurrency: the next starts as soon as one
    ends), how many batches run at once (the Distributed Map's MaxConcurrency: a batch that ends hands its slots to
    the next), and how long to wait for one batch: its longest possible run, and ``grace_seconds`` for SSM's last
    report. See ``command_layout``. Without ``rolling`` (a task with a deadline) every device of a batch starts at
    once, so that each script's time limit, cut to the deadline when the command is sent, ends it by the deadline."""
    if rolling:
        size, per_command, at_once = command_layout(device_count, max_concurrency)
    else:
        size = per_command = batch_size(max_concurrency)
        at_once = max(1, max_concurrency // size)
    rounds = math.ceil(size / per_command)
    return {
        "batchSize": size,
        "batchCount": math.ceil(device_count / size),
        "batchesAtOnce": at_once,
        "commandConcurrency": per_command,
        "batchWaitSeconds": rounds * timeout_seconds + grace_seconds,
    }


def command_layout(device_count: int, max_concurrency: int) -> tuple[int, int, int]:
    """(devices per command, the command's MaxConcurrency, commands at once) for rolling scheduling.

    Commands are few (the orchestration's cost grows with them: at most 50 nodes each, as SSM allows) and the
    device slots are used. When the task needs no more commands than it may run devices at once, every command
    starts at once with an equal share of the slots: the fewest commands that hold the devices in commands of at
    most 50 and share every slot (a divisor of max-concurrency, if one is within a quarter more commands than the
    fewest), else leave at most a tenth of the slots unshared; and
    each command's SSM rate control keeps its share busy, starting a device the moment one of its devices ends.
    Otherwise (more than 50 devices per slot) each slot is a command of 50 devices run one after another
    (MaxConcurrency 1), and the Distributed Map starts the next command the moment one ends: never more than
    max-concurrency commands at once."""
    limit = max(1, min(max_concurrency, device_count))
    needed = math.ceil(device_count / MAX_BATCH_SIZE)
    if needed > limit:
        return MAX_BATCH_SIZE, 1, limit
    shares_all = [k for k in range(needed, min(limit, math.floor(needed * 1.25) + 1) + 1) if limit % k == 0]
    commands = shares_all[0] if shares_all else next(k for k in range(needed, limit + 1) if _idle(limit, k))
    return math.ceil(device_count / commands), limit // commands, commands


def _idle(limit: int, commands: int) -> bool:
    return limit % commands <= limit // IDLE_SHARE


def batch_size(max_concurrency: int) -> int:
    """Devices per batch when all of a batch's devices start at once: one SSM command takes at most 50 nodes."""
    return min(max_concurrency, MAX_BATCH_SIZE)


def task_plan(settings: TaskSettings, device_count: int, grace_seconds: int = 0) -> dict[str, int]:
    """A task's plan, from its settings: rolling unless it has a deadline."""
    return batch_plan(
        device_count,
        concurrency_limit(settings, device_count),
        settings.timeout_seconds,
        grace_seconds,
        rolling=settings.deadline_seconds is None,
    )


def task_batch_size(settings: TaskSettings, device_count: int) -> int:
    """How many devices each batch of a task holds (the last may hold fewer)."""
    return task_plan(settings, device_count)["batchSize"]


def batch_range(number: int, size: int, device_count: int) -> tuple[int, int]:
    """The positions start..end-1 of a batch's devices in the task."""
    return number * size, min((number + 1) * size, device_count)
