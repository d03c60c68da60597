"""SSM's command-invocation status-change events, through EventBridge: record each device's outcome."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun.services import workflow

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    detail = event.detail
    logger.append_keys(command_id=detail["command-id"], node_id=detail["instance-id"], ssm_status=detail["status"])
    task_id = workflow().record_outcome(detail["command-id"], detail["instance-id"])
    if task_id:
        logger.set_correlation_id(task_id)
        logger.info("device outcome recorded")
        metrics.add_metric(name="DeviceOutcomes", unit=MetricUnit.Count, value=1)
    return {"taskId": task_id, "recorded": task_id is not None}
