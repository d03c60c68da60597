"""SSM's status-change events, through EventBridge: each device's outcome as its run ends, and each command's end
(which hands the batch back to the workflow)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun.services import workflow

COMMAND_ENDED = "EC2 Command Status-change Notification"

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail, detail_type = event["detail"], event["detail-type"]
    logger.append_keys(command_id=detail["command-id"], ssm_status=detail["status"])
    if detail_type == COMMAND_ENDED:
        task_id = workflow().record_command(detail["command-id"])
        metric = "BatchesEnded"
    else:
        logger.append_keys(node_id=detail["instance-id"])
        task_id = workflow().record_outcome(detail["command-id"], detail["instance-id"])
        metric = "DeviceOutcomes"
    if task_id:
        logger.set_correlation_id(task_id)
        # A device's outcome is a line per device, which at fleet scale is most of the log bill: DEBUG only
        log = logger.info if detail_type == COMMAND_ENDED else logger.debug
        log("recorded", extra={"event": detail_type})
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    return {"taskId": task_id, "recorded": task_id is not None}
