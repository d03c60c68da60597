from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from longrun.records import DeviceCounts, Task, TaskSettings, TaskStatus
from longrun.views import current_step, estimated_completion, percentage, retry_after

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def task(status: TaskStatus, started_seconds_ago: float | None = None, **counts: int) -> Task:
    return Task(
        id="t",
        kind="script-execution",
        owner="o",
        owner_key="k",
        status=status,
        status_reason="boom" if status is TaskStatus.FAILED else None,
        settings=TaskSettings(script_url="scripts/a.sh", timeout_seconds=60, max_concurrency=50),
        device_count=sum(counts.values()),
        counts=DeviceCounts(**counts),
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW,
        started_at=None if started_seconds_ago is None else NOW - timedelta(seconds=started_seconds_ago),
    )


@pytest.mark.parametrize(
    ("status", "counts", "phrase"),
    [
        (TaskStatus.SUBMITTED, {"PENDING": 3}, "Waiting for the workflow to start"),
        (
            TaskStatus.IN_PROGRESS,
            {"PENDING": 1, "RUNNING": 1, "SUCCESS": 1},
            "Running the script: 1 of 3 devices finished, 1 in flight",
        ),
        (TaskStatus.CANCELLING, {"RUNNING": 2, "SUCCESS": 1}, "Cancelling: stopping 2 running scripts"),
        (TaskStatus.COMPLETE, {"SUCCESS": 2, "FAILED": 1}, "Finished: 2 of 3 devices succeeded"),
        (
            TaskStatus.CANCELLED,
            {"SUCCESS": 1, "CANCELLED": 1, "NOT_STARTED": 2},
            "Cancelled: 2 devices ran, 2 never started",
        ),
        (
            TaskStatus.TIMED_OUT,
            {"SUCCESS": 1, "TIMED_OUT": 1},
            "Timed out: 1 of 2 devices succeeded before the deadline",
        ),
        (TaskStatus.FAILED, {"NOT_STARTED": 1}, "Failed: boom"),
    ],
)
def test_current_step(status: TaskStatus, counts: dict[str, int], phrase: str) -> None:
    assert current_step(task(status, **counts)) == phrase


def test_percentage_counts_finished_devices() -> None:
    assert percentage(task(TaskStatus.IN_PROGRESS, PENDING=2, RUNNING=1, SUCCESS=1, FAILED=2, TIMED_OUT=1)) == 57


def test_no_estimate_until_a_few_devices_have_finished() -> None:
    early = task(TaskStatus.IN_PROGRESS, started_seconds_ago=10, PENDING=90, RUNNING=8, SUCCESS=2)
    assert estimated_completion(early, NOW) is None
    assert retry_after(early, NOW) == 2


def test_the_estimate_follows_the_pace_so_far() -> None:
    # 20 of 100 devices in 40 s: half a device a second, 80 to go: 160 s more
    running = task(TaskStatus.IN_PROGRESS, started_seconds_ago=40, PENDING=60, RUNNING=20, SUCCESS=19, FAILED=1)
    assert estimated_completion(running, NOW) == NOW + timedelta(seconds=160)
    assert retry_after(running, NOW) == 2  # the next device is due in 2 s


def test_retry_after_is_longer_for_slow_tasks_but_never_past_the_estimated_end() -> None:
    slow = task(TaskStatus.IN_PROGRESS, started_seconds_ago=3600, PENDING=90, RUNNING=5, SUCCESS=5)
    assert retry_after(slow, NOW) == 60  # a device every 12 min: poll at most once a minute
    nearly = task(TaskStatus.IN_PROGRESS, started_seconds_ago=3600, RUNNING=1, SUCCESS=99)
    assert retry_after(nearly, NOW) == 37  # 1 device left at 99 per hour: about 36.4 s
    fast = task(TaskStatus.IN_PROGRESS, started_seconds_ago=10, PENDING=500, RUNNING=50, SUCCESS=450)
    assert retry_after(fast, NOW) == 1


def test_retry_after_only_while_unfinished() -> None:
    assert retry_after(task(TaskStatus.SUBMITTED, PENDING=1), NOW) == 1
    assert retry_after(task(TaskStatus.CANCELLING, RUNNING=1), NOW) == 1
    for status in (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT):
        assert retry_after(task(status, SUCCESS=1), NOW) is None
