"""What a client is shown, built as the contract's JSON: its field names, a field without a value left out, dates in
ISO 8601. The API answers these views and the push functions send them as they are, without pydantic; the pydantic
models of longrun.models document the contract, and the tests check each view against its model.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from longrun.links import Links
from longrun.records import (
    Delivery,
    DeviceCounts,
    DeviceRun,
    DeviceStatus,
    ListedTask,
    Task,
    TaskDevices,
    TaskStatus,
    WebhookEndpoint,
)

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


# ---------------------------------------------------------------------------------------------
# What the API answers (longrun.models documents each: the name in brackets)


def task_view(
    task: Task, devices: TaskDevices, links: Links, output_location: str, now: datetime | None = None
) -> dict[str, Any]:
    """A task as a client sees it (ScriptExecution): its state, its devices and, once finished, its result."""
    return present(
        {
            **state_view(task, links, now),
            "device-ids": devices.ids,
            "result": result_summary(task, devices, links, output_location),
        }
    )


def task_summary(task: ListedTask, links: Links) -> dict[str, Any]:
    """A task in a listing (ScriptExecutionSummary): what it is and where it stands."""
    return present(
        {
            "id": task.id,
            "script-url": task.script_url,
            "deviceCount": task.device_count,
            "status": task.status.value,
            "statusReason": task.status_reason,
            "createdAt": json_time(task.created_at),
            "completedAt": json_time(task.completed_at) if task.completed_at else None,
            "href": links.task(task.id),
        }
    )


def page(items: list[dict[str, Any]], next_token: str | None) -> dict[str, Any]:
    """A page of a listing (ScriptExecutionPage, DevicePage, WebhookPage, WebhookDeliveryPage)."""
    return present({"items": items, "next-token": next_token})


def run_fields(run: DeviceRun) -> dict[str, Any]:
    """What the result and the devices route both say of a device's recorded run (DeviceOutcomeFields)."""
    return {
        "device-id": run.device_id,
        "status": run.status.value,
        "reason": run.reason,
        "exitCode": run.exit_code,
        "startedAt": json_time(run.started_at) if run.started_at else None,
        "endedAt": json_time(run.ended_at) if run.ended_at else None,
    }


def device_state(
    task: Task, devices: TaskDevices, index: int, run: DeviceRun | None, batched: bool, links: Links
) -> dict[str, Any]:
    """A device's current state (DeviceState): its outcome once recorded; without one, while the task runs, RUNNING
    if its batch's command was sent to its node (and SSM's rate control no longer holds it back in the command) and
    PENDING otherwise, and once the task has finished the outcome kept for it (NOT_STARTED)."""
    device_id = devices.ids[index]
    href = links.device(task.id, device_id)
    if run is not None:
        ran = run.stdout_url is not None
        return present(
            {
                **run_fields(run),
                "href": href,
                "stdout": f"{href}/stdout" if ran else None,
                "stderr": f"{href}/stderr" if ran else None,
            }
        )
    if task.status.finished:
        status = devices.status_of(index) or DeviceStatus.NOT_STARTED
        reason = NEVER_STARTED if status is DeviceStatus.NOT_STARTED else None
        return present({"device-id": device_id, "status": status.value, "reason": reason, "href": href})
    status = DeviceStatus.RUNNING if batched else DeviceStatus.PENDING
    return {"device-id": device_id, "status": status.value, "href": href}


def device_result(device_id: str | int, run: DeviceRun | None, heads: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    """A device's outcome in the task's result (DeviceResult), with the head of its output (``heads``: each s3://
    URL's first bytes, and whether there is more)."""
    if run is None:
        return never_started(device_id)
    return present(
        {**run_fields(run), "stdout": _stream(run.stdout_url, heads), "stderr": _stream(run.stderr_url, heads)}
    )


def _stream(url: str | None, heads: dict[str, tuple[str, bool]]) -> dict[str, Any] | None:
    """A device's output stream (OutputStream); SSM stores nothing for an empty stream, so it has no location."""
    if url is None:
        return None
    head, truncated = heads.get(url, ("", False))
    return present({"location": url if url in heads else None, "head": head, "truncated": truncated})


def webhook_view(endpoint: WebhookEndpoint, links: Links, show_secret: bool = False) -> dict[str, Any]:
    """A webhook endpoint (Webhook); its secret only when it is made or rotated."""
    return present(
        {
            "id": endpoint.id,
            "url": endpoint.url,
            "events": [event.value for event in endpoint.events],
            "enabled": endpoint.disabled_at is None,
            "disabledReason": endpoint.disabled_reason,
            "createdAt": json_time(endpoint.created_at),
            "secret": endpoint.secret if show_secret else None,
            "href": links.webhook(endpoint.id),
        }
    )


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    """A webhook delivery and each of its attempts (WebhookDelivery)."""
    return present(
        {
            "id": delivery.id,
            "eventType": delivery.event_type,
            "eventId": delivery.event_id,
            "task-id": delivery.task_id,
            "status": delivery.status.value,
            "createdAt": json_time(delivery.created_at),
            "attempts": [
                present(
                    {
                        "time": json_time(attempt.time),
                        "statusCode": attempt.status_code,
                        "latencyMs": attempt.latency_ms,
                        "error": attempt.error,
                    }
                )
                for attempt in delivery.attempts
            ],
        }
    )
