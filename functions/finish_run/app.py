"""Workflow step: end the task COMPLETE, or FAILED with the workflow's error."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.observability import metrics, workflow_step
from longrun.services import workflow


@workflow_step
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    status = workflow().finish_run(event["taskId"], event.get("error"))
    metrics.add_metric(name=f"Tasks{status.title().replace('_', '')}", unit=MetricUnit.Count, value=1)
    return {"taskId": event["taskId"], "status": status}


cold_start.init_done()
