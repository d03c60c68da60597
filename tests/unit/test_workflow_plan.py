from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from longrun import workflow
from longrun.batching import batch_plan, batch_range, concurrency_limit, error_limit, task_plan
from longrun.records import MAX_BATCH_SIZE, DeviceCounts, Task, TaskSettings, TaskStatus


@pytest.mark.parametrize(
    ("devices", "concurrency", "size", "batches", "per_command", "at_once"),
    [
        (1, 50, 1, 1, 1, 1),
        (50, 50, 50, 1, 50, 1),
        (51, 50, 26, 2, 25, 2),
        (500, 50, 50, 10, 5, 10),  # every command at once, 5 devices of each running
        (500, 10, 50, 10, 1, 10),
        (500, 200, 50, 10, 20, 10),
        (1_000, 50, 40, 25, 2, 25),  # not 20 commands of which only 16 could run at once
        (100, 97, 50, 2, 48, 2),  # not 97 commands of one or two devices
        (10_000, 50, 50, 200, 1, 50),  # 50 lanes of one device at a time, the Map handing each on
        (10_000, 1, 50, 200, 1, 1),  # one at a time costs no more commands than 50 at a time
        (10_000, 1_000, 50, 200, 5, 200),
        (5, 2, 5, 1, 2, 1),
        (120, 120, 40, 3, 40, 3),
        (100, 30, 50, 2, 15, 2),
        (4, 1, 4, 1, 1, 1),
    ],
)
def test_rolling_plans_never_run_more_than_max_concurrency(
    devices: int, concurrency: int, size: int, batches: int, per_command: int, at_once: int
) -> None:
    plan = batch_plan(devices, concurrency, timeout_seconds=60, grace_seconds=120)
    assert (plan["batchSize"], plan["batchCount"], plan["commandConcurrency"], plan["batchesAtOnce"]) == (
        size,
        batches,
        per_command,
        at_once,
    )
    assert plan["batchesAtOnce"] * plan["commandConcurrency"] <= concurrency  # SSM's MaxConcurrency, summed
    assert plan["batchSize"] <= MAX_BATCH_SIZE
    assert plan["batchCount"] * plan["batchSize"] >= devices
    assert plan["commandConcurrency"] <= plan["batchSize"]


@pytest.mark.parametrize("devices", [1, 7, 49, 50, 51, 99, 333, 500, 999, 2_500, 10_000])
@pytest.mark.parametrize("concurrency", [1, 2, 3, 7, 10, 13, 49, 50, 64, 100, 200, 999, 1_000])
def test_every_slot_is_used_when_the_devices_fill_them(devices: int, concurrency: int) -> None:
    plan = batch_plan(devices, concurrency, timeout_seconds=60, grace_seconds=0)
    running = min(plan["batchesAtOnce"], plan["batchCount"]) * plan["commandConcurrency"]
    assert running <= concurrency
    if plan["batchCount"] >= plan["batchesAtOnce"]:  # at most a tenth of the slots left over
        assert plan["batchesAtOnce"] * plan["commandConcurrency"] >= min(concurrency, devices) * 0.9
    if devices >= 1_000:  # commands stay few: the orchestration's cost grows with them
        assert plan["batchCount"] <= 1.3 * math.ceil(devices / 50)


def test_a_rolling_batch_waits_for_its_devices_one_after_another() -> None:
    plan = batch_plan(50, 10, 60, grace_seconds=120)  # one command, 10 at a time: five rounds of at most 60 s
    assert (plan["commandConcurrency"], plan["batchWaitSeconds"]) == (10, 5 * 60 + 120)


@pytest.mark.parametrize(
    ("devices", "concurrency", "size", "batches", "at_once"),
    [(1, 50, 50, 1, 1), (51, 50, 50, 2, 1), (10_000, 1_000, 50, 200, 20), (5, 2, 2, 3, 1), (100, 30, 30, 4, 1)],
)
def test_with_a_deadline_every_device_of_a_batch_starts_at_once(
    devices: int, concurrency: int, size: int, batches: int, at_once: int
) -> None:
    plan = batch_plan(devices, concurrency, timeout_seconds=60, grace_seconds=120, rolling=False)
    assert (plan["batchSize"], plan["batchCount"], plan["batchesAtOnce"]) == (size, batches, at_once)
    assert plan["commandConcurrency"] == plan["batchSize"] and plan["batchWaitSeconds"] == 60 + 120


def test_a_task_rolls_unless_it_has_a_deadline() -> None:
    assert task_plan(settings(max_concurrency=50), 500)["commandConcurrency"] == 5
    assert task_plan(settings(max_concurrency=50, deadline_seconds=600), 500)["commandConcurrency"] == 50


def settings(**limits: object) -> TaskSettings:
    return TaskSettings.of({"script_url": "scripts/a.sh", "timeout_seconds": 60, **limits})


@pytest.mark.parametrize(
    ("concurrency", "devices", "limit"),
    [(50, 10, 10), (50, 1000, 50), ("10%", 1000, 100), ("10%", 5, 1), ("100%", 7, 7), (1, 3, 1)],
)
def test_concurrency_limits(concurrency: int | str, devices: int, limit: int) -> None:
    assert concurrency_limit(settings(max_concurrency=concurrency), devices) == limit


@pytest.mark.parametrize(
    ("errors", "devices", "limit"), [(None, 10, None), (0, 10, 0), (3, 10, 3), ("10%", 50, 5), ("0%", 50, 0)]
)
def test_error_limits(errors: int | str | None, devices: int, limit: int | None) -> None:
    assert error_limit(settings(max_concurrency=50, max_errors=errors), devices) == limit


def test_batches_cover_the_devices_in_order() -> None:
    assert [batch_range(n, 50, 120) for n in range(3)] == [(0, 50), (50, 100), (100, 120)]


@pytest.mark.parametrize(
    ("deadline", "after", "left"),
    [(1, 0.1, 1), (1, 0.999, 1), (1, 1.0, 0), (1, 1.5, 0), (10, 0.2, 10), (10, 9.01, 1), (None, 5.0, None)],
)
def test_a_deadline_is_honoured_to_the_second(deadline: int | None, after: float, left: int | None) -> None:
    """A part of a second left counts as a second (deadline-seconds 1 once ended a task TIMED_OUT 0.1 s in, with
    nothing run); once the deadline has passed, nothing is left."""
    created = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    settings = TaskSettings(
        script_url="scripts/a.sh", timeout_seconds=60, max_concurrency=50, deadline_seconds=deadline
    )
    task = Task(
        id="t", kind="script-execution", owner="o", owner_key="k", status=TaskStatus.IN_PROGRESS, settings=settings,
        device_count=1, counts=DeviceCounts(RUNNING=1), created_at=created, updated_at=created,
    )  # fmt: skip
    assert workflow._seconds_left(task, created + timedelta(seconds=after)) == left
