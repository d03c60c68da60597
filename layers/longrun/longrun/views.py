"""What a client is shown of a task, built as the contract's JSON: its field names, a field without a value left out,
dates in ISO 8601 as the API writes them. The push functions send these views as they are, without pydantic; the API
validates them into its response models (longrun.models), which document the contract, and the tests check each view
against its model.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from longrun.links import Links
from longrun.records import DeviceCounts, DeviceStatus, Task, TaskDevices, TaskStatus

ESTIMATE_AFTER_DEVICES = 3
"""How many devices must have finished before the task's pace is taken as its estimate."""
MAX_RETRY_AFTER_SECONDS = 60
NEVER_STARTED = "the device never started"
RAN_WITHOUT_SUCCESS = frozenset({DeviceStatus.FAILED, DeviceStatus.TIMED_OUT, DeviceStatus.CANCELLED})


def json_time(moment: datetime) -> str:
    """A date as the contract writes it (UTC with Z), the same as the API's models do."""
    return moment.isoformat().replace("+00:00", "Z")


def present(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that have a value: the contract leaves the others out."""
    return {name: value for name, value in fields.items() if value is not None}


def state_view(task: Task, links: Links, now: datetime | None = None) -> dict[str, Any]:
    """A task as a client sees it, without its device list and result (ScriptExecutionState), its estimate as of
    ``now`` (default: now)."""
    settings = task.settings
    estimated = estimated_completion(task, now or datetime.now(UTC))
    return present(
        {
            "id": task.id,
            "script-url": settings.script_url,
            "timeout-seconds": settings.timeout_seconds,
            "max-concurrency": settings.max_concurrency,
            "max-errors": settings.max_errors,
            "deadline-seconds": settings.deadline_seconds,
            "status": task.status.value,
            "statusReason": task.status_reason,
            "percentage": percentage(task),
            "currentStep": current_step(task),
            "deviceCounts": task.counts.as_dict(),
            "createdAt": json_time(task.created_at),
            "updatedAt": json_time(task.updated_at),
            "startedAt": json_time(task.started_at) if task.started_at else None,
            "estimatedCompletionAt": json_time(estimated) if estimated else None,
            "completedAt": json_time(task.completed_at) if task.completed_at else None,
            "href": links.task(task.id),
        }
    )


def device_outcome(
    device_id: str | int, status: DeviceStatus, exit_code: int | None = None, reason: str | None = None
) -> dict[str, Any]:
    """A device's outcome as an event tells it (DeviceOutcome)."""
    return present({"device-id": device_id, "status": status.value, "exitCode": exit_code, "reason": reason})


def never_started(device_id: str | int) -> dict[str, Any]:
    return device_outcome(device_id, DeviceStatus.NOT_STARTED, reason=NEVER_STARTED)


def result_summary(task: Task, devices: TaskDevices, links: Links, output_location: str) -> dict[str, Any] | None:
    """Which devices succeeded and which did not, once the task has finished (ResultSummary); ``output_location`` is
    the S3 prefix of its devices' output."""
    if not (task.status.finished and devices.outcomes):
        return None
    statuses = [devices.status_of(index) for index in range(len(devices.ids))]
    return {
        "id": task.id,
        "success-on-devices": [d for d, s in zip(devices.ids, statuses, strict=True) if s is DeviceStatus.SUCCESS],
        "failed-on-devices": [d for d, s in zip(devices.ids, statuses, strict=True) if s in RAN_WITHOUT_SUCCESS],
        "sys-log-location": output_location,
        "err-log-location": output_location,
        "href": links.result(task.id),
    }


def percentage(task: Task) -> int:
    return percentage_of(task.counts)


def percentage_of(counts: DeviceCounts) -> int:
    """Devices finished, in whole percent of the task's devices."""
    total = counts.total
    return ((total - counts.unfinished) * 100) // total if total else 100


def _pace(task: Task, now: datetime) -> float | None:
    """Devices finished per second since the run started, once a few have finished."""
    finished = task.counts.total - task.counts.unfinished
    if task.status is not TaskStatus.IN_PROGRESS or task.started_at is None:
        return None
    elapsed = (now - task.started_at).total_seconds()
    if finished < min(ESTIMATE_AFTER_DEVICES, task.counts.total) or elapsed <= 0:
        return None
    return finished / elapsed


def estimated_completion(task: Task, now: datetime) -> datetime | None:
    """When the task should finish if its devices keep the pace they have had so far."""
    pace = _pace(task, now)
    if pace is None:
        return None
    return now + timedelta(seconds=task.counts.unfinished / pace)


def retry_after(task: Task, now: datetime) -> int | None:
    """Seconds a client should wait before it polls again; None once the task has finished. Short while nothing
    is known, then the time the next device is expected to take (longer for slow tasks), never more than the time
    left to the estimated end."""
    if task.status.finished:
        return None
    pace = _pace(task, now)
    if pace is None:
        return 1 if task.status in (TaskStatus.SUBMITTED, TaskStatus.CANCELLING) else 2
    left = task.counts.unfinished / pace
    return max(1, min(math.ceil(1 / pace), math.ceil(left), MAX_RETRY_AFTER_SECONDS))


def current_step(task: Task) -> str:
    """A short human phrase for where the task is."""
    counts = task.counts
    finished = counts.total - counts.unfinished
    match task.status:
        case TaskStatus.SUBMITTED:
            return "Waiting for the workflow to start"
        case TaskStatus.IN_PROGRESS:
            return f"Running the script: {finished} of {counts.total} devices finished, {counts.RUNNING} in flight"
        case TaskStatus.CANCELLING:
            return f"Cancelling: stopping {counts.RUNNING} running scripts"
        case TaskStatus.COMPLETE:
            return f"Finished: {counts.SUCCESS} of {counts.total} devices succeeded"
        case TaskStatus.CANCELLED:
            return f"Cancelled: {finished - counts.NOT_STARTED} devices ran, {counts.NOT_STARTED} never started"
        case TaskStatus.TIMED_OUT:
            return f"Timed out: {counts.SUCCESS} of {counts.total} devices succeeded before the deadline"
        case _:
            return f"Failed: {task.status_reason}"
