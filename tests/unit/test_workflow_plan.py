from __future__ import annotations

import pytest

from longrun.workflow import BATCH_SIZE, REPORT_GRACE_SECONDS, batch_plan


@pytest.mark.parametrize(
    ("devices", "concurrency", "batches", "at_once", "per_command"),
    [
        (1, 50, 1, 1, 50),
        (50, 50, 1, 1, 50),
        (51, 50, 2, 1, 50),
        (10_000, 50, 200, 1, 50),
        (10_000, 1_000, 200, 20, 50),
        (5, 2, 1, 1, 2),
        (120, 120, 3, 2, 50),
    ],
)
def test_batches_never_run_more_than_max_concurrency(
    devices: int, concurrency: int, batches: int, at_once: int, per_command: int
) -> None:
    plan = batch_plan(devices, concurrency, timeout_seconds=60)
    assert (plan["batchCount"], plan["batchesAtOnce"], plan["nodesAtOnce"]) == (batches, at_once, per_command)
    assert plan["batchesAtOnce"] * plan["nodesAtOnce"] <= max(concurrency, 1)
    assert plan["batchCount"] * BATCH_SIZE >= devices


def test_a_batch_waits_for_every_round_of_its_devices() -> None:
    # 50 devices, 10 at a time: five rounds of up to 60 s each, plus the grace for SSM's last report
    assert batch_plan(50, 10, 60)["batchWaitSeconds"] == 5 * 60 + REPORT_GRACE_SECONDS
