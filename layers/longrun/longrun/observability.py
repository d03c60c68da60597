"""The Powertools set-up the workflow's functions share: structured logs with the task as correlation id,
X-Ray traces and CloudWatch metrics, one set per function process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer()
metrics = Metrics()

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def workflow_step(handler: Handler) -> Handler:
    """A state machine step's handler: its event carries the task's id, which becomes the correlation id."""
    traced = tracer.capture_lambda_handler(handler)
    return logger.inject_lambda_context(correlation_id_path="taskId")(metrics.log_metrics(traced))
