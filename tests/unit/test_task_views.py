from __future__ import annotations

from datetime import UTC, datetime

import pytest

from longrun.models import DeviceCounts, ScriptExecutionRequest, Task, TaskStatus
from longrun.tasks import current_step, retry_after


def task(status: TaskStatus, **counts: int) -> Task:
    now = datetime.now(UTC)
    return Task(
        id="t",
        kind="script-execution",
        owner="o",
        status=status,
        status_reason="boom" if status is TaskStatus.FAILED else None,
        request=ScriptExecutionRequest.model_validate({"device-ids": ["a"], "script-url": "scripts/a.sh"}),
        counts=DeviceCounts(**counts),
        created_at=now,
        updated_at=now,
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
        (TaskStatus.FAILED, {"NOT_STARTED": 1}, "Failed: boom"),
    ],
)
def test_current_step(status: TaskStatus, counts: dict[str, int], phrase: str) -> None:
    assert current_step(task(status, **counts)) == phrase


def test_retry_after_only_while_unfinished() -> None:
    assert retry_after(TaskStatus.SUBMITTED) == 1
    assert retry_after(TaskStatus.IN_PROGRESS) == 2
    assert retry_after(TaskStatus.CANCELLING) == 2
    for status in (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED):
        assert retry_after(status) is None
