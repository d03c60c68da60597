from __future__ import annotations

import pytest

from longrun.batching import batch_plan, batch_range, concurrency_limit, error_limit
from longrun.models import MAX_BATCH_SIZE, TaskSettings


@pytest.mark.parametrize(
    ("devices", "concurrency", "size", "batches", "at_once"),
    [
        (1, 50, 50, 1, 1),
        (50, 50, 50, 1, 1),
        (51, 50, 50, 2, 1),
        (10_000, 50, 50, 200, 1),
        (10_000, 1_000, 50, 200, 20),
        (5, 2, 2, 3, 1),
        (120, 120, 50, 3, 2),
        (100, 30, 30, 4, 1),
    ],
)
def test_batches_never_run_more_than_max_concurrency(
    devices: int, concurrency: int, size: int, batches: int, at_once: int
) -> None:
    plan = batch_plan(devices, concurrency, timeout_seconds=60, grace_seconds=120)
    assert (plan["batchSize"], plan["batchCount"], plan["batchesAtOnce"]) == (size, batches, at_once)
    assert plan["batchesAtOnce"] * plan["batchSize"] <= concurrency
    assert plan["batchSize"] <= MAX_BATCH_SIZE
    assert plan["batchCount"] * plan["batchSize"] >= devices


def test_every_device_of_a_batch_starts_at_once_so_a_batch_waits_one_time_limit() -> None:
    assert batch_plan(50, 10, 60, grace_seconds=120)["batchWaitSeconds"] == 60 + 120


def settings(**limits: object) -> TaskSettings:
    return TaskSettings.model_validate({"script_url": "scripts/a.sh", "timeout_seconds": 60, **limits})


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
