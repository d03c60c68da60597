"""The Powertools set-up the workflow's functions share: structured logs with the task as correlation id and
CloudWatch metrics, one set per function process. Traces come from Lambda itself (the template's ``Tracing:
Active``), without the X-Ray SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def workflow_step(handler: Handler) -> Handler:
    """A state machine step's handler: its event carries the task's id, which becomes the correlation id."""
    return logger.inject_lambda_context(correlation_id_path="taskId")(metrics.log_metrics(handler))
