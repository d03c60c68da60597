"""The steps of the script-execution state machine (statemachine/script_execution.asl.json), one function each,
and the handling of SSM's status-change events.

The machine starts the run, fans out over batches of up to 50 devices (one SSM command each) and waits on each
batch with a task token. SSM's events, queued, report each device as it ends (progress: the reports of a batch of
messages are recorded in one transaction per task), and the whole command once every device of it has ended;
then the batch's token is handed back. Nothing polls.

Rate control rolls (see ``batching.command_layout``): each command runs its devices under SSM's own rate control
(MaxConcurrency: the next device starts the moment one ends), several commands run at once, and the sum of their
MaxConcurrency never exceeds ``max-concurrency``; a command that ends hands its slots to the next (the Distributed
Map's MaxConcurrency). No batch starts once more than ``max-errors`` devices have failed or timed out, and each
command's MaxErrors is what is left of the task's; once the task's errors pass it, the devices that SSM still holds
back in the other commands are cancelled, so max-errors stays task-wide. A task with ``deadline-seconds`` starts
every device of a batch at once (no rolling) and no batch once the deadline has passed; each script's time limit is
cut to the time left before the deadline, so every script ends by then.
"""

from __future__ import annotations

import math
import random
import time
from collections import OrderedDict, defaultdict
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from aws_lambda_powertools import Logger

from longrun import executions, lifecycle, run_command, scripts
from longrun.batching import batch_range, error_limit, task_plan
from longrun.config import Settings
from longrun.records import Batch, CommandOutcome, DeviceStatus, Task, TaskStatus
from longrun.store import ConditionFailed, Finished, TaskStore, utc_now

logger = Logger(child=True)


class InvocationStillRunning(Exception):
    """SSM announced a node's run ended before its record says so; the event is retried."""


class TaskNotRecorded(Exception):
    """The execution started, but its task is not in the table: the API starts the execution before it records the
    task, so the task may still be on its way. The state machine retries the step for longer than the API function
    may run (StartRun's retry of TaskNotRecorded in the ASL); after that, its API request has died, and the execution
    ends NeverRecorded with nothing recorded, so no task is ever left SUBMITTED."""


RECORD_WAITS = (0.05, 0.1, 0.2, 0.4)
"""Seconds the first step waits in-process for a task its API request is recording right now"""


class Recorded(NamedTuple):
    """What a batch of SSM's reports came to."""

    task_ids: frozenset[str]
    """The tasks whose devices they reported"""
    still_running: frozenset[tuple[str, str]]
    """The runs (command, node) SSM does not list as ended yet: their reports are retried"""


SENT_BATCHES_KEPT = 1_000
SEND_ATTEMPTS = 5
SEND_BACKOFF_SECONDS = 0.25
"""A batch's SendCommand is tried up to SEND_ATTEMPTS times, looking for the command after each failure that may have
sent it, with full-jitter backoff from this first ceiling"""
MAX_READS_AT_ONCE = 10
"""How many of SSM's invocation records a batch of reports reads at once"""


def _seconds_left(task: Task, now: datetime) -> int | None:
    """Whole seconds until the task's deadline, a part of a second counting as one (0 or less once it has passed), so
    that a deadline is honoured to the second; None without a deadline."""
    deadline = task.deadline_at
    return None if deadline is None else math.ceil((deadline - now).total_seconds())


def _with_deadline(batch: Batch, outcome: CommandOutcome) -> CommandOutcome:
    """A script stopped at a time limit that the task's deadline had cut was stopped by the deadline."""
    if batch.cut_by_deadline and outcome.status is DeviceStatus.TIMED_OUT:
        return replace(outcome, reason="stopped at the task's deadline-seconds")
    return outcome


def _errors(task: Task) -> int:
    return task.counts.FAILED + task.counts.TIMED_OUT


class Workflow:
    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config
        self._sent_batches: OrderedDict[tuple[str, int], Batch] = OrderedDict()
        self._held_back: set[str] = set()
        """Tasks past max-errors whose commands' held-back devices this environment has cancelled"""

    def _plan(self, task: Task) -> dict[str, int]:
        return task_plan(task.settings, task.device_count, self._config.report_grace_seconds)

    def start_run(self, task_id: str) -> dict[str, Any]:
        """First step: check the script is there, mark the task IN_PROGRESS, and plan the batches. A retry of this
        step (its first answer lost) plans the same batches again."""
        nothing = {"taskId": task_id, "batches": [], "batchesAtOnce": 1, "batchWaitSeconds": 1}
        task = self._store.get_task(task_id)
        for wait in RECORD_WAITS:
            if task is not None:
                break
            time.sleep(wait)
            task = self._store.get_task(task_id)
        if task is None:
            raise TaskNotRecorded(f"task {task_id} is not recorded (yet)")
        if task.status not in (TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS):
            logger.info("task is no longer waiting to start", extra={"status": task and task.status})
            return nothing
        if task.status is TaskStatus.SUBMITTED:
            key = scripts.script_key(task.settings.script_url, self._config.scripts_bucket)
            if not scripts.script_exists(self._config.scripts_bucket, key):
                bucket = self._config.scripts_bucket
                reason = f"the script s3://{bucket}/{key} does not exist (or longrun may not read it)"
                lifecycle.finish(self._store, task_id, TaskStatus.FAILED, reason=reason)
                return nothing
            try:
                lifecycle.change_status(self._store, task_id, TaskStatus.IN_PROGRESS)
            except ConditionFailed:  # it moved: by this very write, whose answer was lost and retried, or a cancel
                task = self._store.get_task(task_id)
                if task is None or task.status is not TaskStatus.IN_PROGRESS:
                    return nothing
        plan = self._plan(task)
        return {
            "taskId": task_id,
            "batches": list(range(plan["batchCount"])),
            "batchesAtOnce": plan["batchesAtOnce"],
            "batchWaitSeconds": plan["batchWaitSeconds"],
        }

    def run_batch(self, task_id: str, number: int, task_token: str) -> dict[str, Any]:
        """Start one batch: find each device's node, record the batch, send one SSM command for its nodes. The
        workflow waits on ``task_token`` until SSM reports the command ended (see ``record_command``)."""
        task = self._store.get_task(task_id)
        why_not = self._why_not_start(task)
        if why_not or task is None:
            return self._skip(task_token, task_id, number, why_not or "task is missing")
        batch = self._store.get_batch(task_id, number)
        if batch is None:
            batch = self._record_batch(task, number, task_token)
            if batch is None:
                return self._skip(task_token, task_id, number, "task is no longer in progress")
        if batch.task_token != task_token:  # a retry of this step: the workflow now waits on the new token
            self._store.set_batch_token(task_id, number, task_token)
            batch = replace(batch, task_token=task_token)
        if not batch.nodes:
            executions.resume(task_token, {"batch": number, "sent": 0})
            return {"batch": number, "commandId": None}
        if batch.command_id is None:
            batch.command_id = self._send(task, batch)
        return {"batch": number, "commandId": batch.command_id}

    def _why_not_start(self, task: Task | None) -> str | None:
        if task is None or task.status is not TaskStatus.IN_PROGRESS:
            return "task is no longer in progress"
        left = _seconds_left(task, utc_now())
        if left is not None and left <= 0:
            return "the task's deadline has passed"
        limit = error_limit(task.settings, task.device_count)
        if limit is not None and _errors(task) > limit:
            return f"more than max-errors ({limit}) devices failed"
        return None

    def _batch_devices(self, task: Task, number: int) -> tuple[int, list[str | int]]:
        """The position of a batch's first device in the task, and the batch's device ids in request order."""
        start, end = batch_range(number, self._plan(task)["batchSize"], task.device_count)
        return start, self._store.device_ids(task.id, start, end)

    def _record_batch(self, task: Task, number: int, task_token: str) -> Batch | None:
        start, devices = self._batch_devices(task, number)
        resolution = run_command.resolve_devices(devices, self._config.device_id_tag_key)
        nodes: dict[str, int] = {}
        failed: dict[int, str] = {}
        for index, device_id in enumerate(devices, start):
            node = resolution.nodes.get(device_id)
            if node is None:
                failed[index] = resolution.unknown[device_id]
            elif node in nodes:
                failed[index] = f"names the same managed node {node} as device {devices[nodes[node] - start]}"
            else:
                nodes[node] = index
        batch = Batch(
            task_id=task.id, number=number, start=start, device_ids=devices, nodes=nodes, task_token=task_token
        )
        try:
            self._store.start_batch(batch, failed)
        except ConditionFailed:
            return self._store.get_batch(task.id, number)  # a retry of this step, or the task left IN_PROGRESS
        return batch

    def _send(self, task: Task, batch: Batch) -> str | None:
        """Send the batch's command, once, and record it. A node SSM refuses (no longer a managed node) ends FAILED
        and the rest are sent; a cancel that came in meanwhile cancels the command at once. A retry of the step after
        an attempt that may have sent the command but not recorded it looks for that command before sending: a
        script never runs twice on a device."""
        plan = self._plan(task)
        settings = task.settings
        left = _seconds_left(task, utc_now())
        limit = error_limit(settings, task.device_count)
        time_limit = settings.timeout_seconds if left is None else max(1, min(settings.timeout_seconds, left))
        comment = run_command.batch_comment(task.id, batch.number)
        since, maybe_sent = self._store.mark_batch_sending(task.id, batch.number)
        command_id = run_command.sent_command(comment, since) if maybe_sent else None
        uncertain = 0
        while command_id is None:
            try:
                command_id = run_command.send_script(
                    node_ids=list(batch.nodes),  # request order
                    bucket=self._config.scripts_bucket,
                    key=scripts.script_key(settings.script_url, self._config.scripts_bucket),
                    timeout_seconds=time_limit,
                    start_within_seconds=left if left is not None else plan["batchWaitSeconds"],
                    max_concurrency=plan["commandConcurrency"],
                    max_errors=None if limit is None else max(0, limit - _errors(task)),
                    output_prefix=scripts.output_prefix(self._config.output_prefix, task.id),
                    comment=comment,
                )
            except run_command.MaybeSent:
                uncertain += 1
                if uncertain >= SEND_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, SEND_BACKOFF_SECONDS * 2**uncertain))  # noqa: S311 - jitter
                command_id = run_command.sent_command(comment, since)
            except run_command.NodesNotManaged as error:
                registered = run_command.registered_nodes(list(batch.nodes))
                refused = {
                    node: run_command.not_managed(node, f"device {batch.device_at(index)}")
                    for node, index in batch.nodes.items()
                    if node not in registered or node in error.named
                }
                if not refused:
                    raise
                batch = self._store.fail_unsent(batch, refused)
                if not batch.nodes:
                    executions.resume(batch.task_token, {"batch": batch.number, "sent": 0})
                    return None
        self._store.set_batch_command(task.id, batch.number, command_id, time_limit < settings.timeout_seconds)
        now = self._store.get_task(task.id)
        if now is None or now.status is not TaskStatus.IN_PROGRESS:
            run_command.cancel(command_id)  # a cancel came in while the command was being sent
            logger.info("cancelled a command sent while the task was being cancelled")
        return command_id

    @staticmethod
    def _skip(task_token: str, task_id: str, number: int, why: str) -> dict[str, Any]:
        logger.info("batch not started", extra={"batch": number, "why": why, "task_id": task_id})
        executions.resume(task_token, {"batch": number, "skipped": why})
        return {"batch": number, "skipped": why}

    # --- SSM's events ----------------------------------------------------------------------------

    def _batch_of(self, comment: str) -> Batch | None:
        """The batch a command was sent for. A sent batch no longer changes, so a warm function keeps the batches
        it has read: the devices of one batch report one after another, and need one read, not fifty."""
        origin = run_command.parse_comment(comment)
        if origin is None:
            return None
        batch = self._sent_batches.get(origin)
        if batch is None:
            batch = self._store.get_batch(*origin)
            if batch is not None and batch.command_id is not None:
                self._sent_batches[origin] = batch
                while len(self._sent_batches) > SENT_BATCHES_KEPT:
                    self._sent_batches.popitem(last=False)
        return batch

    def record_outcomes(self, reports: Collection[tuple[str, str]]) -> Recorded:
        """SSM reported that these runs (command, node) ended: record each device's outcome once, those of one task
        together (one transaction, whichever of its commands they ran in). Answers the tasks, and the reports whose
        run SSM does not list as ended yet (to be retried); a command that is not longrun's is passed over. (A
        cancelled task is settled when its commands end.)"""
        still_running: set[tuple[str, str]] = set()
        by_task: defaultdict[str, list[Finished]] = defaultdict(list)
        # Each node's run on its own (a page of a whole command with its steps' output is up to 50 times larger), all
        # at once
        runs = sorted(reports)

        def ended(run: tuple[str, str]) -> CommandOutcome | None:
            return run_command.command_runs(*run).ended.get(run[1])

        with ThreadPoolExecutor(max_workers=max(1, min(len(runs), MAX_READS_AT_ONCE))) as pool:
            outcomes = list(pool.map(ended, runs))
        for (command_id, node_id), outcome in zip(runs, outcomes, strict=True):
            if outcome is None:
                still_running.add((command_id, node_id))
                continue
            batch = self._batch_of(outcome.comment)
            if batch is not None and node_id in batch.nodes:
                by_task[batch.task_id].append((batch, batch.nodes[node_id], _with_deadline(batch, outcome)))
        for task_id, finished in by_task.items():
            # The command's end may have recorded some of them already (its event can come first)
            recorded = self._store.recorded_devices(task_id, [index for _, index, _ in finished])
            new = [device for device in finished if device[1] not in recorded]
            self._finish(new)
            if any(outcome.status in (DeviceStatus.FAILED, DeviceStatus.TIMED_OUT) for _, _, outcome in new):
                self._hold_back_past_max_errors(task_id)
        return Recorded(frozenset(by_task), frozenset(still_running))

    def _finish(self, finished: list[Finished]) -> None:
        """Record a task's devices' outcomes in one transaction; if another report recorded one of them meanwhile,
        each of the others on its own."""
        if finished and not self._store.finish_devices(finished):
            for batch, index, outcome in finished:
                self._store.finish_device(batch, index, outcome)

    def _hold_back_past_max_errors(self, task_id: str) -> None:
        """max-errors is task-wide: once the task's errors pass it, SSM stops the command that passed it (its
        MaxErrors), and the devices SSM still holds back in the task's other commands are cancelled before they
        start (they end NOT_STARTED); the scripts already running go on."""
        task = self._store.get_task(task_id)
        if task is None or task.status is not TaskStatus.IN_PROGRESS:
            return
        limit = error_limit(task.settings, task.device_count)
        if limit is None or _errors(task) <= limit:
            return
        if task_id in self._held_back:
            return  # this environment cancelled them already; no command starts once max-errors has passed
        for command_id in run_command.commands_going(task_id, task.created_at):
            waiting = sorted(run_command.waiting_nodes(command_id))
            if waiting:
                run_command.cancel(command_id, waiting)
                logger.info("max-errors passed: cancelled devices not started", extra={"command_id": command_id})
        self._held_back.add(task_id)
        while len(self._held_back) > SENT_BATCHES_KEPT:
            self._held_back.pop()

    def record_command(self, command_id: str) -> str | None:
        """SSM reported that a whole command ended: record every device of its batch whose own report has not been
        recorded yet (reports can arrive in any order, or not at all for nodes SSM never sent the command to), then
        hand the batch's token back. Answers the task, or None when the command is not longrun's."""
        batch = self._batch_of(run_command.command_comment(command_id))
        if batch is None:
            return None
        runs = run_command.command_runs(command_id)
        unrecorded = self._unrecorded(batch)
        going = sorted(node_id for node_id in unrecorded if node_id in runs.going)
        if going:
            raise InvocationStillRunning(f"SSM still lists {going[0]}'s run of {command_id} as going")
        not_sent = "SSM did not send the script to the device (max-errors reached or the command ended)"
        self._finish(
            [
                (
                    batch,
                    index,
                    _with_deadline(batch, runs.ended[node_id])
                    if node_id in runs.ended
                    else CommandOutcome(
                        command_id=command_id,
                        node_id=node_id,
                        comment="",
                        status=DeviceStatus.NOT_STARTED,
                        reason=not_sent,
                    ),
                )
                for node_id, index in unrecorded.items()
            ]
        )
        latest = self._store.get_batch(batch.task_id, batch.number) or batch  # its token, if a retry replaced it
        executions.resume(latest.task_token, {"batch": batch.number, "devices": len(batch.device_ids)})
        lifecycle.settle_cancel(self._store, batch.task_id)
        return batch.task_id

    def _unrecorded(self, batch: Batch) -> dict[str, int]:
        """The batch's devices (node -> position) with no outcome recorded."""
        recorded = self._store.recorded_devices(batch.task_id, batch.nodes.values())
        return {node: index for node, index in batch.nodes.items() if index not in recorded}

    def expire_batch(self, task_id: str, number: int) -> None:
        """The batch's wait ran out, so some of its reports never came (SSM's events are delivered at best effort):
        ask SSM how each silent device's run stands and record how it ended; stop the runs still going, and record
        them TIMED_OUT (or NOT_STARTED if SSM had not started them)."""
        batch = self._store.get_batch(task_id, number) or self._expire_unstarted(task_id, number)
        if batch is None:
            return
        silent = self._unrecorded(batch)
        if not silent:
            lifecycle.settle_cancel(self._store, task_id)
            return
        runs = run_command.command_runs(batch.command_id) if batch.command_id else run_command.CommandRuns({}, {})
        going = sorted(node for node in silent if node in runs.going)
        if batch.command_id and going:
            run_command.cancel(batch.command_id, going)
        outcomes: list[Finished] = []
        for node_id, index in silent.items():
            if node_id in runs.ended:
                outcomes.append((batch, index, _with_deadline(batch, runs.ended[node_id])))
                continue
            status, reason = DeviceStatus.NOT_STARTED, "SSM never sent the batch's script to the device"
            if runs.going.get(node_id):
                status = DeviceStatus.TIMED_OUT
                reason = "SSM did not report the script's end in time; its run was cancelled"
            elif node_id in runs.going:
                reason = "SSM had not started the script when the batch's time ran out; it was cancelled"
            outcomes.append(
                (
                    batch,
                    index,
                    CommandOutcome(
                        command_id=batch.command_id or "", node_id=node_id, comment="", status=status, reason=reason
                    ),
                )
            )
        self._finish(outcomes)
        lifecycle.settle_cancel(self._store, task_id)

    def _expire_unstarted(self, task_id: str, number: int) -> Batch | None:
        """A batch whose wait ran out before its step recorded it (the step is slow, or still retrying its calls):
        its devices end NOT_STARTED now, under the batch's record, so that the step, if it gets there, finds the
        batch taken and sends nothing. If the step records it first, that batch is expired as any other."""
        task = self._store.get_task(task_id)
        if task is None or task.status is not TaskStatus.IN_PROGRESS:
            return None
        start, devices = self._batch_devices(task, number)
        unstarted = Batch(task_id=task_id, number=number, start=start, device_ids=devices, nodes={}, task_token="")
        why = "the batch's time ran out before it was started"
        try:
            self._store.start_batch(
                unstarted, dict.fromkeys(range(*unstarted.index_range), why), DeviceStatus.NOT_STARTED
            )
        except ConditionFailed:
            return self._store.get_batch(task_id, number)  # recorded meanwhile, or the task left IN_PROGRESS
        logger.info("batch expired before it started", extra={"task_id": task_id, "batch": number})
        return None

    def finish_run(self, task_id: str, error: dict[str, Any] | None = None) -> str:
        """Last step: the task is COMPLETE once every batch is done (with the reason when max-errors stopped it),
        TIMED_OUT when its deadline cut devices short, or FAILED with the workflow's error (or because devices were
        still running when the workflow ended). A task being cancelled is left to end as CANCELLED."""
        while True:
            task = self._store.get_task(task_id)
            if task is None:
                return "MISSING"
            if task.status not in (TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS):
                return task.status.value
            to, reason = self._ending(task, error)
            try:
                if to is TaskStatus.FAILED:
                    for batch in self._store.batches(task_id):
                        if batch.command_id:
                            run_command.cancel(batch.command_id)
                return lifecycle.finish(self._store, task_id, to, reason=reason).status.value
            except ConditionFailed:
                continue  # a device or a cancel moved the task meanwhile: decide again from its new state

    @staticmethod
    def _ending(task: Task, error: dict[str, Any] | None) -> tuple[TaskStatus, str | None]:
        counts = task.counts
        if error is not None:
            cause = f"{error.get('Error', 'error')}: {error.get('Cause', '')}".rstrip(": ")
            return TaskStatus.FAILED, f"the workflow failed: {cause}"
        if task.status is TaskStatus.SUBMITTED or counts.RUNNING:
            return TaskStatus.FAILED, f"the workflow ended with {counts.RUNNING} devices still running"
        left = _seconds_left(task, utc_now())
        cut = counts.PENDING + counts.NOT_STARTED + counts.TIMED_OUT
        if left is not None and left <= 0 and cut:
            return TaskStatus.TIMED_OUT, (
                f"deadline-seconds ({task.settings.deadline_seconds}) passed: {counts.TIMED_OUT} devices timed out,"
                f" {counts.PENDING + counts.NOT_STARTED} never started"
            )
        limit = error_limit(task.settings, task.device_count)
        if limit is not None and _errors(task) > limit:
            return TaskStatus.COMPLETE, (
                f"max-errors ({limit}) exceeded: {_errors(task)} devices failed or timed out,"
                f" {counts.PENDING + counts.NOT_STARTED} were not started"
            )
        return TaskStatus.COMPLETE, None
