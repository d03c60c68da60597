"""The steps of the script-execution state machine (statemachine/script_execution.asl.json), one function each.

The machine starts the run, fans out over batches of up to 50 devices (one SSM command each) and waits on each
batch with a task token; SSM's status-change events report each device, and the batch's token is handed back once
its last device is recorded. No step polls.
"""

from __future__ import annotations

import math
from typing import Any

from aws_lambda_powertools import Logger

from longrun import executions, lifecycle, run_command, scripts
from longrun.config import Settings
from longrun.models import Batch, CommandOutcome, DeviceStatus, TaskStatus, device_key
from longrun.store import ConditionFailed, TaskStore
from longrun.tasks import settle_cancel

logger = Logger(child=True)

BATCH_SIZE = run_command.MAX_NODES_PER_COMMAND
REPORT_GRACE_SECONDS = 120
"""How long past a batch's longest possible run the workflow waits for SSM's last report before it gives up."""


def batch_plan(device_count: int, max_concurrency: int, timeout_seconds: int) -> dict[str, int]:
    """How to fan out: how many batches run at once, how many nodes each command runs at once, and how long to wait
    for one batch. Together they never run more than ``max_concurrency`` devices at a time."""
    per_command = min(max_concurrency, BATCH_SIZE)
    rounds = math.ceil(min(device_count, BATCH_SIZE) / per_command)
    return {
        "batchCount": math.ceil(device_count / BATCH_SIZE),
        "batchesAtOnce": max(1, max_concurrency // BATCH_SIZE),
        "nodesAtOnce": per_command,
        "batchWaitSeconds": rounds * timeout_seconds + REPORT_GRACE_SECONDS,
    }


class Workflow:
    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config

    def start_run(self, task_id: str) -> dict[str, Any]:
        """First step: check the script is there, mark the task IN_PROGRESS, and plan the batches."""
        task = self._store.get_task(task_id, consistent=True)
        if task is None or task.status is not TaskStatus.SUBMITTED:
            logger.info("task is no longer waiting to start", extra={"status": task and task.status})
            return {"taskId": task_id, "batches": [], "batchesAtOnce": 1, "batchWaitSeconds": 1}
        key = scripts.script_key(task.request.script_url, self._config.scripts_bucket)
        if not scripts.script_exists(self._config.scripts_bucket, key):
            lifecycle.finish(
                self._store,
                task_id,
                TaskStatus.FAILED,
                reason=f"the script s3://{self._config.scripts_bucket}/{key} does not exist",
            )
            return {"taskId": task_id, "batches": [], "batchesAtOnce": 1, "batchWaitSeconds": 1}
        lifecycle.change_status(self._store, task_id, TaskStatus.IN_PROGRESS)
        request = task.request
        plan = batch_plan(len(request.device_ids), request.max_concurrency, request.timeout_seconds)
        return {
            "taskId": task_id,
            "batches": list(range(plan["batchCount"])),
            "batchesAtOnce": plan["batchesAtOnce"],
            "batchWaitSeconds": plan["batchWaitSeconds"],
        }

    def run_batch(self, task_id: str, number: int, task_token: str) -> dict[str, Any]:
        """Start one batch: find each device's node, record the batch, send one SSM command for its nodes. The
        workflow waits on ``task_token`` until SSM has reported every node (see ``record_outcome``)."""
        task = self._store.get_task(task_id, consistent=True)
        if task is None or task.status is not TaskStatus.IN_PROGRESS:
            return self._skip(task_token, task_id, number, "task is no longer in progress")
        batch = self._store.get_batch(task_id, number)
        if batch is None:
            devices = task.request.device_ids[number * BATCH_SIZE : (number + 1) * BATCH_SIZE]
            batch = self._record_batch(task_id, number, devices, task_token)
            if batch is None:
                return self._skip(task_token, task_id, number, "task is no longer in progress")
        if not batch.instances:
            executions.resume(task_token, {"batch": number, "devices": len(batch.device_ids), "sent": 0})
            return {"batch": number, "commandId": None}
        if batch.command_id is None:
            request = task.request
            plan = batch_plan(len(request.device_ids), request.max_concurrency, request.timeout_seconds)
            command_id = run_command.send_script(
                node_ids=sorted(batch.instances),
                bucket=self._config.scripts_bucket,
                key=scripts.script_key(request.script_url, self._config.scripts_bucket),
                timeout_seconds=request.timeout_seconds,
                max_concurrency=plan["nodesAtOnce"],
                output_prefix=scripts.output_prefix(self._config.output_prefix, task_id),
                comment=run_command.batch_comment(task_id, number),
            )
            try:
                self._store.set_batch_command(task_id, number, command_id)
            except ConditionFailed:
                run_command.cancel(command_id)  # a cancel came in while the command was being sent
                logger.info("cancelled a command sent while the task was being cancelled")
            batch.command_id = command_id
        return {"batch": number, "commandId": batch.command_id}

    def _record_batch(self, task_id: str, number: int, devices: list[str | int], task_token: str) -> Batch | None:
        resolution = run_command.resolve_devices(devices, self._config.device_id_tag_key)
        running: dict[str | int, str] = {}
        unknown = dict(resolution.unknown)
        claimed: dict[str, str | int] = {}
        for device_id, node_id in resolution.nodes.items():
            if node_id in claimed:
                unknown[device_id] = f"names the same managed node {node_id} as device {claimed[node_id]}"
            else:
                claimed[node_id] = device_id
                running[device_id] = node_id
        batch = Batch(
            task_id=task_id,
            number=number,
            device_ids=devices,
            instances={node: device_key(device) for device, node in running.items()},
            task_token=task_token,
        )
        try:
            self._store.start_batch(batch, running=running, unknown=unknown)
        except ConditionFailed:
            return self._store.get_batch(task_id, number)  # a retry of this step, or the task left IN_PROGRESS
        return batch

    @staticmethod
    def _skip(task_token: str, task_id: str, number: int, why: str) -> dict[str, Any]:
        logger.info("batch not started", extra={"batch": number, "why": why, "task_id": task_id})
        executions.resume(task_token, {"batch": number, "skipped": why})
        return {"batch": number, "skipped": why}

    def record_outcome(self, command_id: str, node_id: str) -> str | None:
        """SSM reported that a node finished a command: record the device's outcome once, hand the batch's token
        back when it was the batch's last device, and end a cancelling task once nothing runs. Answers the task the
        report was about, or None when it was not about one of longrun's devices."""
        outcome = run_command.outcome(command_id, node_id)
        origin = run_command.parse_comment(outcome.comment)
        if origin is None:
            return None
        task_id, number = origin
        batch = self._store.get_batch(task_id, number)
        if batch is None or node_id not in batch.instances:
            logger.warning("report for a node that is not in its batch", extra={"task_id": task_id, "node": node_id})
            return None
        self._finish_nodes(batch, [outcome])
        return task_id

    def expire_batch(self, task_id: str, number: int) -> None:
        """The batch's wait ran out: every node SSM has not reported is recorded TIMED_OUT and its command stopped."""
        batch = self._store.get_batch(task_id, number)
        if batch is None:
            return
        silent = sorted(set(batch.instances) - batch.done)
        if batch.command_id and silent:
            run_command.cancel(batch.command_id, silent)
        outcomes = [
            CommandOutcome(
                command_id=batch.command_id or "",
                instance_id=node_id,
                comment="",
                status=DeviceStatus.TIMED_OUT,
                reason="SSM did not report the script's end in time; the command was cancelled",
            )
            for node_id in silent
        ]
        self._finish_nodes(batch, outcomes, resume=False)

    def _finish_nodes(self, batch: Batch, outcomes: list[CommandOutcome], resume: bool = True) -> None:
        devices = {device_key(device): device for device in batch.device_ids}
        for outcome in outcomes:
            self._store.finish_device(batch.task_id, devices[batch.instances[outcome.instance_id]], outcome)
        if outcomes:
            batch = self._store.mark_batch_done(batch.task_id, batch.number, [o.instance_id for o in outcomes])
        if resume and batch.complete:
            executions.resume(batch.task_token, {"batch": batch.number, "devices": len(batch.device_ids)})
        settle_cancel(self._store, batch.task_id)

    def finish_run(self, task_id: str, error: dict[str, Any] | None = None) -> str:
        """Last step: the task is COMPLETE once every batch is done, or FAILED with the workflow's error (or because
        devices were still running when the workflow ended). A task being cancelled is left to end as CANCELLED."""
        while True:
            task = self._store.get_task(task_id, consistent=True)
            if task is None:
                return "MISSING"
            if task.status not in (TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS):
                return task.status.value
            if error is not None:
                reason = f"the workflow failed: {error.get('Error', 'error')}: {error.get('Cause', '')}".rstrip(": ")
            elif task.status is TaskStatus.SUBMITTED or task.counts.RUNNING:
                reason = f"the workflow ended with {task.counts.RUNNING} devices still running"
            else:
                reason = None
            try:
                if reason is None:
                    return lifecycle.finish(self._store, task_id, TaskStatus.COMPLETE).status.value
                for batch in self._store.batches(task_id):
                    if batch.command_id and not batch.complete:
                        run_command.cancel(batch.command_id)
                return lifecycle.finish(self._store, task_id, TaskStatus.FAILED, reason=reason).status.value
            except ConditionFailed:
                continue  # a device or a cancel moved the task meanwhile: decide again from its new state
