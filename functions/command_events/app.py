"""SSM's status-change events, queued by an EventBridge rule: each device's outcome as its run ends, and each
command's end (which hands the batch back to the workflow). The device reports of a batch of messages are recorded
together, one transaction per task; a report SSM's own record does not bear out yet is retried."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.services import workflow
from longrun.workflow import InvocationStillRunning

COMMAND_ENDED = "EC2 Command Status-change Notification"

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    devices: dict[tuple[str, str], list[str]] = {}
    """(command, node) -> the messages reporting that run's end (SQS may deliver one twice)"""
    ends: list[tuple[str, str]] = []
    """(message, command) of each command's end"""
    for record in event["Records"]:
        report = json.loads(record["body"])
        detail = report["detail"]
        if report["detail-type"] == COMMAND_ENDED:
            ends.append((record["messageId"], detail["command-id"]))
        else:
            devices.setdefault((detail["command-id"], detail["instance-id"]), []).append(record["messageId"])
    failed = _record_devices(devices) if devices else []
    failed += [message for message, command_id in ends if not _record_command(command_id)]
    return {"batchItemFailures": [{"itemIdentifier": message} for message in failed]}


def _record_devices(devices: dict[tuple[str, str], list[str]]) -> list[str]:
    """Record the devices' outcomes; answer the messages to retry."""
    try:
        recorded = workflow().record_outcomes(devices)
    except Exception:
        logger.exception("device reports not recorded", extra={"runs": len(devices)})
        return [message for messages in devices.values() for message in messages]
    if recorded.still_running:
        logger.info("SSM does not list these runs as ended yet", extra={"runs": sorted(recorded.still_running)})
    # A device's outcome is a line per device, which at fleet scale is most of the log bill: DEBUG only
    logger.debug("recorded", extra={"task_ids": sorted(recorded.task_ids)})
    ended = len(devices) - len(recorded.still_running)
    if ended:
        metrics.add_metric(name="DeviceOutcomes", unit=MetricUnit.Count, value=ended)
    return [message for run in recorded.still_running for message in devices[run]]


def _record_command(command_id: str) -> bool:
    """Record the command's end; False when it is to be retried."""
    try:
        task_id = workflow().record_command(command_id)
    except InvocationStillRunning as still:
        logger.info(str(still), extra={"command_id": command_id})
        return False
    except Exception:
        logger.exception("command's end not recorded", extra={"command_id": command_id})
        return False
    if task_id:
        logger.info("recorded", extra={"task_id": task_id, "command_id": command_id, "event": COMMAND_ENDED})
        metrics.add_metric(name="BatchesEnded", unit=MetricUnit.Count, value=1)
    return True


cold_start.init_done()
