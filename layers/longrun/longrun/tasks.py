"""What a client can do with script-execution tasks: submit, read, list, read the result, cancel."""

from __future__ import annotations

import uuid

from botocore.exceptions import BotoCoreError, ClientError

from longrun import executions, lifecycle, run_command, scripts
from longrun.config import Settings
from longrun.errors import BadRequest, OrchestrationUnavailable, TaskConflict, TaskNotFound
from longrun.models import (
    DeviceResult,
    DeviceRun,
    DeviceStatus,
    OutputStream,
    ResultSummary,
    ScriptExecution,
    ScriptExecutionPage,
    ScriptExecutionRequest,
    ScriptExecutionResult,
    Task,
    TaskStatus,
    device_key,
)
from longrun.store import ConditionFailed, InvalidPageToken, TaskStore

KIND = "script-execution"
RESOURCE = "/device-management/script-execution"
RESULT_PAGE_MAX = 100


def href(task_id: str) -> str:
    return f"{RESOURCE}/{task_id}"


class ScriptExecutions:
    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config

    def submit(self, owner: str, request: ScriptExecutionRequest) -> ScriptExecution:
        """Record the task and start its workflow; two AWS calls whatever the fleet size."""
        scripts.script_key(request.script_url, self._config.scripts_bucket)
        if not self._config.state_machine_arn:
            raise OrchestrationUnavailable("this function is not configured with STATE_MACHINE_ARN")
        task_id = str(uuid.uuid4())
        arn = executions.execution_arn(self._config.state_machine_arn, task_id)
        task = self._store.create_task(task_id, KIND, owner, request, arn)
        lifecycle.publish(task)
        try:
            executions.start(self._config.state_machine_arn, task_id, {"taskId": task_id})
        except (ClientError, BotoCoreError) as error:
            lifecycle.finish(self._store, task_id, TaskStatus.FAILED, reason=f"workflow did not start: {error}")
            raise OrchestrationUnavailable(f"the workflow could not be started: {error}") from error
        return self._view(task)

    def describe(self, owner: str, task_id: str) -> ScriptExecution:
        return self._view(self._owned(owner, task_id))

    def list(self, owner: str, status: TaskStatus | None, limit: int, next_token: str | None) -> ScriptExecutionPage:
        try:
            tasks, token = self._store.list_tasks(owner, status, limit, next_token)
        except InvalidPageToken as error:
            raise BadRequest(str(error)) from error
        return ScriptExecutionPage(items=[self._view(task) for task in tasks], next_token=token)

    def result(self, owner: str, task_id: str, limit: int, next_token: str | None) -> ScriptExecutionResult:
        """Each device's outcome, in the order the request listed the devices."""
        task = self._owned(owner, task_id)
        if not task.status.finished:
            raise TaskConflict(f"task {task_id} is {task.status.value}; its result is ready once it has finished")
        start = _offset(next_token, len(task.request.device_ids))
        devices = task.request.device_ids[start : start + limit]
        runs = self._store.device_runs_of(task_id, devices)
        end = start + len(devices)
        return ScriptExecutionResult(
            id=task_id,
            status=task.status,
            devices=[_device_result(device, runs.get(device_key(device))) for device in devices],
            next_token=str(end) if end < len(task.request.device_ids) else None,
        )

    def cancel(self, owner: str, task_id: str) -> ScriptExecution:
        """Stop the task: no new device starts, running scripts are cancelled, the execution is stopped. Asking
        again answers the same state; a task that already finished is a conflict and stays as it is."""
        task = self._owned(owner, task_id)
        if task.status in (TaskStatus.CANCELLING, TaskStatus.CANCELLED):
            return self._view(task)
        if task.status.finished:
            raise TaskConflict(f"task {task_id} already finished as {task.status.value}")
        try:
            task = lifecycle.change_status(self._store, task_id, TaskStatus.CANCELLING, reason=f"cancelled by {owner}")
        except ConditionFailed:
            return self.cancel(owner, task_id)  # it moved meanwhile: answer from its new state
        if task.execution_arn:
            executions.stop(task.execution_arn, cause=f"cancelled by {owner}")
        for batch in self._store.batches(task_id):
            if batch.command_id and not batch.complete:
                run_command.cancel(batch.command_id)
        return self._view(settle_cancel(self._store, task_id) or task)

    def _owned(self, owner: str, task_id: str) -> Task:
        task = self._store.get_task(task_id)
        if task is None or task.owner != owner or task.kind != KIND:
            raise TaskNotFound(f"no script-execution task {task_id}")
        return task

    def _view(self, task: Task) -> ScriptExecution:
        counts = task.counts
        total = counts.total
        finished = total - counts.unfinished
        result = None
        if task.status.finished and task.outcome is not None:
            prefix = f"s3://{self._config.scripts_bucket}/{scripts.output_prefix(self._config.output_prefix, task.id)}/"
            result = ResultSummary(
                id=task.id,
                success_on_devices=task.outcome.succeeded,
                failed_on_devices=task.outcome.not_succeeded,
                sys_log_location=prefix,
                err_log_location=prefix,
                href=f"{href(task.id)}/result",
            )
        return ScriptExecution(
            id=task.id,
            device_ids=task.request.device_ids,
            script_url=task.request.script_url,
            timeout_seconds=task.request.timeout_seconds,
            max_concurrency=task.request.max_concurrency,
            status=task.status,
            status_reason=task.status_reason,
            percentage=(finished * 100) // total if total else 100,
            current_step=current_step(task),
            device_counts=counts.model_dump(),
            created_at=task.created_at,
            updated_at=task.updated_at,
            completed_at=task.completed_at,
            result=result,
            href=href(task.id),
        )


def retry_after(status: TaskStatus) -> int | None:
    """Seconds a client should wait before it polls an unfinished task again; None once it has finished."""
    if status.finished:
        return None
    return 1 if status is TaskStatus.SUBMITTED else 2


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
        case _:
            return f"Failed: {task.status_reason}"


def settle_cancel(store: TaskStore, task_id: str) -> Task | None:
    """End a cancelling task as CANCELLED once none of its scripts is still running; answer it if it ended."""
    task = store.get_task(task_id, consistent=True)
    if task is None or task.status is not TaskStatus.CANCELLING or task.counts.RUNNING:
        return None
    try:
        return lifecycle.finish(store, task_id, TaskStatus.CANCELLED, reason=task.status_reason)
    except ConditionFailed:
        return None


def _offset(next_token: str | None, total: int) -> int:
    if next_token is None:
        return 0
    if not next_token.isdigit() or int(next_token) >= total:
        raise BadRequest("next-token is not a token this API issued for this result")
    return int(next_token)


def _device_result(device_id: str | int, run: DeviceRun | None) -> DeviceResult:
    if run is None:
        return DeviceResult(device_id=device_id, status=DeviceStatus.NOT_STARTED, reason="the device never started")
    status = run.status
    return DeviceResult(
        device_id=device_id,
        status=status,
        reason=run.reason,
        exit_code=run.exit_code,
        started_at=run.started_at,
        ended_at=run.ended_at,
        stdout=_stream(run.stdout_url, run.stdout_head) if run.command_id and status.finished else None,
        stderr=_stream(run.stderr_url, run.stderr_head) if run.command_id and status.finished else None,
    )


def _stream(location: str | None, head: str | None) -> OutputStream:
    """A device's output stream; SSM stores nothing for an empty stream, so it has no location."""
    head = head or ""
    return OutputStream(
        location=location if head else None, head=head, truncated=len(head) >= run_command.OUTPUT_HEAD_CHARS
    )
