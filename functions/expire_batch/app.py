"""Workflow step: a batch's wait ran out; record its unreported devices TIMED_OUT and stop their scripts."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun.services import workflow

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(correlation_id_path="taskId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    workflow().expire_batch(event["taskId"], int(event["batch"]))
    metrics.add_metric(name="BatchesExpired", unit=MetricUnit.Count, value=1)
    return {"batch": event["batch"], "expired": True}
