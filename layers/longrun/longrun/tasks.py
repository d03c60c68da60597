"""What a client can do with script-execution tasks: submit, read, list, read the result and each device's current
state and output, cancel."""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from longrun import executions, idempotency, lifecycle, page_tokens, scripts
from longrun.api_requests import DEVICE_SCAN_WINDOW, RESOURCE_ID, RESULT_PAGE_MAX, Submission
from longrun.batching import task_plan
from longrun.config import Settings
from longrun.errors import (
    BadRequest,
    DeviceNotFinished,
    DeviceNotFound,
    IdempotencyKeyReused,
    NoOutput,
    OrchestrationUnavailable,
    TaskConflict,
    TaskNotFound,
)
from longrun.links import Links
from longrun.records import SCRIPT_EXECUTION, DeviceStatus, Owner, Task, TaskDevices, TaskStatus
from longrun.store import ConditionFailed, InvalidPageToken, TaskStore, owner_digest, utc_now
from longrun.views import (
    NEVER_STARTED,
    device_result,
    device_state,
    page,
    present,
    retry_after,
    task_summary,
    task_view,
)

Stream = Literal["stdout", "stderr"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskAnswer:
    """A task as the API answers it: the contract's ScriptExecution (longrun.views.task_view), and how many seconds
    the client should wait before it polls again (Retry-After; None once the task has finished, or not known)."""

    view: dict[str, Any]
    retry_after: int | None = None

    @property
    def status(self) -> TaskStatus:
        return TaskStatus(self.view["status"])


class ScriptExecutions:
    def __init__(self, store: TaskStore, config: Settings, tokens: page_tokens.PageTokens | None = None) -> None:
        self._store = store
        self._config = config
        self._tokens = tokens or page_tokens.sealed_with(config.page_token_key_name)

    def submit(self, owner: Owner, request: Submission, links: Links, idempotency_key: str | None = None) -> TaskAnswer:
        """Record the task and start its workflow: two AWS requests whatever the fleet size. With an idempotency key,
        a repeat of an accepted request answers the same task and starts nothing (longrun.idempotency)."""
        scripts.script_key(request.settings.script_url, self._config.scripts_bucket)
        machine = self._config.state_machine_arn
        if not machine:
            raise OrchestrationUnavailable("this function is not configured with STATE_MACHINE_ARN")
        if idempotency_key is None:
            made = self._accept(owner, request, links, machine, str(uuid.uuid4()))
            if made is None:  # a new random id is never taken
                raise OrchestrationUnavailable("the workflow could not be started under a new name; retry")
            return made
        return idempotency.once(
            "submit",
            owner.key,
            idempotency_key,
            request.as_json(),
            lambda ids: self._accept_under_key(owner, request, links, machine, ids),
            kept=lambda answer: answer.view,
            replayed=TaskAnswer,  # the first answer's body, without its Retry-After, which was of its time
        )

    def _accept_under_key(
        self, owner: Owner, request: Submission, links: Links, machine: str, ids: Iterator[str]
    ) -> TaskAnswer:
        """The task an earlier run under the same key made (its function timed out before the key's record was
        marked done), or a new one under the first id no earlier use of the key has taken."""
        for task_id in ids:
            made = self._accept(owner, request, links, machine, task_id)
            if made is not None:
                return made
        raise IdempotencyKeyReused("every task id this Idempotency-Key can give is taken; use a new key")

    def _accept(self, owner: Owner, request: Submission, links: Links, machine: str, task_id: str) -> TaskAnswer | None:
        """Start the task's workflow and record the task under ``task_id``, or answer the task an earlier request
        recorded under it; None if the id is taken otherwise (its execution ended without a task, or its task
        belongs to an earlier use of the key). The execution is named by the task, so it cannot start twice: starting
        it again while it runs starts nothing."""
        arn = executions.execution_arn(machine, task_id)
        # The execution starts before the task is recorded: a request that dies in between leaves an execution that
        # fails on its own (workflow.TaskNotRecorded), never a task SUBMITTED with nothing to start it.
        try:
            executions.start(machine, task_id, {"taskId": task_id})
        except executions.NameTaken:
            return self._recorded_under(owner, task_id, links)
        except (ClientError, BotoCoreError) as error:
            raise OrchestrationUnavailable(f"the workflow could not be started: {error}") from error
        try:
            task = self._store.create_task(task_id, SCRIPT_EXECUTION, owner, request.settings, request.device_ids, arn)
        except ConditionFailed:
            # Recorded already: by this request, whose write acted though its answer was lost and the SDK wrote again,
            # or by an earlier run under the same key, whose execution is the one found running.
            return self._recorded_under(owner, task_id, links)
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                if self._store.get_task(task_id) is None:  # never the execution of a task recorded meanwhile
                    executions.stop(arn, "its task could not be recorded")
            raise
        lifecycle.publish(task)
        return self._view(task, TaskDevices(ids=request.device_ids), links)

    def _recorded_under(self, owner: Owner, task_id: str, links: Links) -> TaskAnswer | None:
        """The task recorded under ``task_id`` if this owner made it within the key's window."""
        found = self._store.get_task_with_devices(task_id)
        if found is None:
            return None
        task, devices = found
        mine = task.owner_key == owner_digest(owner.key) and task.kind == SCRIPT_EXECUTION
        return self._view(task, devices, links) if mine and idempotency.within_window(task.created_at) else None

    def describe(self, owner: Owner, task_id: str, links: Links) -> TaskAnswer:
        """One read, whatever the fleet size."""
        return self._view(*self._owned(owner, task_id), links)

    def list(
        self, owner: Owner, status: TaskStatus | None, limit: int, next_token: str | None, links: Links
    ) -> dict[str, Any]:
        """A page of the owner's tasks, newest first (ScriptExecutionPage)."""
        caller, query = owner_digest(owner.key), f"tasks?status={status.value if status else ''}"
        try:
            tasks, token = self._store.list_tasks(owner, status, limit, self._tokens.open(next_token, caller, query))
        except InvalidPageToken as error:
            raise BadRequest(str(error)) from error
        items = [task_summary(task, links) for task in tasks if task.kind == SCRIPT_EXECUTION]
        return page(items, self._tokens.seal(token, caller, query))

    def result(self, owner: Owner, task_id: str, limit: int, next_token: str | None) -> dict[str, Any]:
        """Each device's outcome, in the order the request listed the devices, with the head of its output
        (ScriptExecutionResult)."""
        task, devices = self._owned(owner, task_id)
        if not task.status.finished:
            raise TaskConflict(f"task {task_id} is {task.status.value}; its result is ready once it has finished")
        caller, query = owner_digest(owner.key), f"result:{task_id}"
        start = _offset(self._tokens.open(next_token, caller, query), task.device_count)
        end = min(start + limit, task.device_count)
        runs = self._store.device_runs(task_id, start, end)
        heads = scripts.read_heads(
            [url for run in runs.values() for url in (run.stdout_url, run.stderr_url) if url is not None]
        )
        return present(
            {
                "id": task_id,
                "status": task.status.value,
                "devices": [device_result(devices.ids[i], runs.get(i), heads) for i in range(start, end)],
                "next-token": self._tokens.seal(_next_token(end, task.device_count), caller, query),
            }
        )

    def devices(
        self, owner: Owner, task_id: str, status: DeviceStatus | None, limit: int, next_token: str | None, links: Links
    ) -> dict[str, Any]:
        """Each device's current state (DevicePage), in request order; while the task runs too. A page reads only the
        device records of the positions it covers, and the batches among them. With ``status``, a page looks at up
        to DEVICE_SCAN_WINDOW devices, so it may hold fewer than ``limit`` (even none) and still have a next-token."""
        task, devices = self._owned(owner, task_id)
        total = task.device_count
        caller, query = owner_digest(owner.key), f"devices:{task_id}?status={status.value if status else ''}"
        start = _offset(self._tokens.open(next_token, caller, query), total)

        def up_to(items: list[dict[str, Any]], end: int) -> dict[str, Any]:
            return page(items, self._tokens.seal(_next_token(end, total), caller, query))

        if status is None:
            end = min(start + limit, total)
            return up_to([state for _, state in self._states(task, devices, start, end, None, links)], end)
        first = _first_possible(task, devices, status, start)
        if first is None:
            return up_to([], total)
        found: list[dict[str, Any]] = []
        window_end = min(first + DEVICE_SCAN_WINDOW, total)
        for chunk in range(first, window_end, RESULT_PAGE_MAX):
            for index, state in self._states(
                task, devices, chunk, min(chunk + RESULT_PAGE_MAX, window_end), status, links
            ):
                found.append(state)
                if len(found) == limit:
                    return up_to(found, index + 1)
        return up_to(found, window_end)

    def device(self, owner: Owner, task_id: str, device: str, links: Links) -> dict[str, Any]:
        """One device's current state (DeviceState); ``device`` is its id as the path gives it (decoded)."""
        task, devices = self._owned(owner, task_id)
        index = _position(task_id, devices, device)
        return self._states(task, devices, index, index + 1, None, links)[0][1]

    def device_output(self, owner: Owner, task_id: str, device: str, stream: Stream) -> str | None:
        """A short-lived URL of a finished device's whole stdout or stderr; None when the stream is empty."""
        task, devices = self._owned(owner, task_id)
        index = _position(task_id, devices, device)
        run = self._store.device_runs(task_id, index, index + 1).get(index)
        device_id = devices.ids[index]
        if run is None and not task.status.finished:
            raise DeviceNotFinished(
                f"device {device_id!r} of task {task_id} has not finished; its output is ready once it has finished"
            )
        url = (run.stdout_url if stream == "stdout" else run.stderr_url) if run else None
        if url is None:
            status = run.status if run else devices.status_of(index) or DeviceStatus.NOT_STARTED
            why = (run.reason if run else None) or NEVER_STARTED
            raise NoOutput(f"device {device_id!r} of task {task_id} ended {status.value} without running: {why}")
        return scripts.output_download_url(url)

    def _states(
        self, task: Task, devices: TaskDevices, start: int, end: int, wanted: DeviceStatus | None, links: Links
    ) -> Sequence[tuple[int, dict[str, Any]]]:
        """The current state of the devices at positions start..end-1 (only those in the ``wanted`` status), by
        position: their records, and the started batches among them for those without one while the task runs."""
        positions = range(start, end)
        if wanted is not None and task.status.finished and devices.outcomes:
            positions = range(0)  # the outcomes tell which to read
            candidates = [i for i in range(start, end) if devices.status_of(i) is wanted]
            if candidates:
                positions = range(candidates[0], candidates[-1] + 1)
        if not positions:
            return []
        runs = self._store.device_runs(task.id, positions.start, positions.stop)
        unrecorded = [i for i in positions if i not in runs]
        batched: set[int] = set()
        if (
            unrecorded
            and not task.status.finished
            and task.counts.RUNNING
            and wanted in (None, DeviceStatus.PENDING, DeviceStatus.RUNNING)
        ):
            plan = task_plan(task.settings, task.device_count)
            size = plan["batchSize"]
            first, end = unrecorded[0] // size, unrecorded[-1] // size + 1
            batched = self._store.batched_devices(task.id, first, end)
            if batched and plan["commandConcurrency"] < size:
                batched -= self._held_back_by_ssm(task.id, first, end, set(unrecorded))
        states = [(i, device_state(task, devices, i, runs.get(i), i in batched, links)) for i in positions]
        return [(i, state) for i, state in states if wanted is None or state["status"] == wanted.value]

    def _held_back_by_ssm(self, task_id: str, first: int, end: int, wanted: set[int]) -> set[int]:
        """Of the devices at ``wanted`` positions in the batches first..end-1, those that SSM's rate control still
        holds back in their command (its invocation Pending or Delayed): PENDING, not RUNNING, until SSM starts them.
        One ListCommandInvocations per command; if SSM cannot be asked, every sent device shows RUNNING."""
        from longrun import run_command  # SSM's: only a page of devices that SSM may hold back needs it

        held: set[int] = set()
        for command_id, nodes in self._store.sent_commands(task_id, first, end).items():
            if not wanted.intersection(nodes.values()):
                continue
            try:
                waiting = run_command.waiting_nodes(command_id)
            except (BotoCoreError, ClientError):
                logger.warning("could not ask SSM which devices it holds back", extra={"command_id": command_id})
                continue
            held.update(index for node, index in nodes.items() if node in waiting)
        return held

    def cancel(self, owner: Owner, task_id: str, links: Links) -> TaskAnswer:
        """Stop the task: no new device starts, running scripts are cancelled, the execution is stopped. Asking
        again answers the same state; a task that already finished is a conflict and stays as it is."""
        task, devices = self._owned(owner, task_id)
        if task.status is TaskStatus.CANCELLED:
            return self._view(task, devices, links)
        if task.status.finished:
            raise TaskConflict(f"task {task_id} already finished as {task.status.value}")
        if task.status is not TaskStatus.CANCELLING:
            try:
                reason = f"cancelled by {owner.name}"
                task = lifecycle.change_status(self._store, task_id, TaskStatus.CANCELLING, reason=reason)
            except ConditionFailed:
                return self.cancel(owner, task_id, links)  # it moved meanwhile: answer from its new state
        reason = task.status_reason or f"cancelled by {owner.name}"
        # Each step below is safe to repeat: a cancel asked again after one of them failed (a 5xx) finishes what the
        # first began, so a task is never left CANCELLING with nothing left to end it.
        from longrun import run_command  # SSM's: only a cancel needs it

        if task.execution_arn:
            executions.stop(task.execution_arn, cause=reason)
        for batch in self._store.batches(task_id):
            if batch.command_id:
                run_command.cancel(batch.command_id)
        if lifecycle.settle_cancel(self._store, task_id):
            task, devices = self._owned(owner, task_id)
        return self._view(task, devices, links)

    def _owned(self, owner: Owner, task_id: str) -> tuple[Task, TaskDevices]:
        if not RESOURCE_ID.fullmatch(task_id):
            raise TaskNotFound("no script-execution task has this id")
        found = self._store.get_task_with_devices(task_id)
        if found is None or found[0].owner_key != owner_digest(owner.key) or found[0].kind != SCRIPT_EXECUTION:
            raise TaskNotFound(f"no script-execution task {task_id}")
        return found

    def _view(self, task: Task, devices: TaskDevices, links: Links) -> TaskAnswer:
        now = utc_now()
        location = scripts.output_location(self._config.scripts_bucket, self._config.output_prefix, task.id)
        return TaskAnswer(task_view(task, devices, links, location, now), retry_after(task, now))


def find_device(ids: list[str | int], wanted: str) -> int | None:
    """The position of the device a path names: the string id equal to it, else the integer id whose decimal form
    it is."""
    numbered = None
    for index, device_id in enumerate(ids):
        if isinstance(device_id, str):
            if device_id == wanted:
                return index
        elif numbered is None and str(device_id) == wanted:
            numbered = index
    return numbered


def _position(task_id: str, devices: TaskDevices, device: str) -> int:
    index = find_device(devices.ids, device)
    if index is None:
        raise DeviceNotFound(f"task {task_id} has no device {device!r}")
    return index


def _first_possible(task: Task, devices: TaskDevices, status: DeviceStatus, start: int) -> int | None:
    """Where a scan for devices in ``status`` may find one, from ``start`` on; None if none can be there: a finished
    task's outcomes say where each status is, a running task's counts whether any device has it."""
    if task.status.finished and devices.outcomes:
        found = devices.outcomes.find(status.letter, start)
        return None if found < 0 else found
    if not task.status.finished:
        count = getattr(task.counts, status.value)
        if status is DeviceStatus.PENDING:
            count += task.counts.RUNNING  # the counts call RUNNING every device sent, even one SSM still holds back
        if count == 0:
            return None
    return start


POSITION = re.compile(r"[0-9]{1,5}")
"""A result's or a devices page's next-token: the position it starts at (ASCII digits: ``str.isdigit`` also takes
superscripts and other scripts' digits, some of which ``int`` refuses and some it reads)"""


def _next_token(position: int, total: int) -> str | None:
    return str(position) if position < total else None


def _offset(next_token: str | None, total: int) -> int:
    if next_token is None:
        return 0
    if not POSITION.fullmatch(next_token) or int(next_token) >= total:
        raise BadRequest("next-token is not a token this API issued for this result")
    return int(next_token)
