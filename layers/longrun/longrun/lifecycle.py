"""The task lifecycle, generic over kinds of task. Every status change goes through ``change_status``, which makes
the conditional write and logs it. Clients hear of it through the change feed (longrun.change_feed): the table's
stream carries every write, so nothing here has to publish, and a crash after the write loses no event."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from longrun.records import DeviceStatus, Task, TaskStatus
from longrun.store import ConditionFailed, TaskStore

logger = Logger(child=True)

# Which statuses each status may be reached from.
TRANSITIONS: dict[TaskStatus, tuple[TaskStatus, ...]] = {
    TaskStatus.IN_PROGRESS: (TaskStatus.SUBMITTED,),
    TaskStatus.COMPLETE: (TaskStatus.IN_PROGRESS,),
    TaskStatus.FAILED: (TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS),
    TaskStatus.CANCELLING: (TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS),
    TaskStatus.CANCELLED: (TaskStatus.CANCELLING,),
    TaskStatus.TIMED_OUT: (TaskStatus.IN_PROGRESS,),
}


def change_status(store: TaskStore, task_id: str, to: TaskStatus, reason: str | None = None) -> Task:
    """Move a task to ``to`` from any status allowed to reach it, or raise ``store.ConditionFailed``."""
    task = store.change_status(task_id, to, TRANSITIONS[to], reason=reason)
    publish(task)
    return task


def finish(store: TaskStore, task_id: str, to: TaskStatus, reason: str | None = None) -> Task:
    """End a task as COMPLETE, FAILED, CANCELLED or TIMED_OUT, fixing each device's outcome beside it. All but FAILED
    (the workflow itself broke) require that no device is still running."""
    task = store.get_task(task_id)
    if task is None:
        raise ConditionFailed(f"task {task_id} is missing")
    letters = [DeviceStatus.NOT_STARTED.letter] * task.device_count
    for run in store.all_device_runs(task_id):
        letters[run.index] = run.status.letter
    task = store.change_status(
        task_id,
        to,
        TRANSITIONS[to],
        reason=reason,
        require_idle=to is not TaskStatus.FAILED,
        outcomes="".join(letters),
    )
    publish(task)
    return task


def settle_cancel(store: TaskStore, task_id: str) -> Task | None:
    """End a cancelling task as CANCELLED once none of its scripts is still running; answer it if it ended."""
    task = store.get_task(task_id)
    if task is None or task.status is not TaskStatus.CANCELLING or task.counts.RUNNING:
        return None
    try:
        return finish(store, task_id, TaskStatus.CANCELLED, reason=task.status_reason)
    except ConditionFailed:
        return None


def publish(task: Task) -> None:
    """One structured log line per status change."""
    logger.info(
        "task status changed",
        extra={
            "task_id": task.id,
            "kind": task.kind,
            "owner": task.owner,
            "status": task.status.value,
            "status_reason": task.status_reason,
            "device_counts": task.counts.as_dict(),
        },
    )
