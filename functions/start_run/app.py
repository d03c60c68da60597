"""Workflow step: start a task's run and plan its batches."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.observability import metrics, workflow_step
from longrun.services import workflow


@workflow_step
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    plan = workflow().start_run(event["taskId"])
    metrics.add_metric(name="BatchesPlanned", unit=MetricUnit.Count, value=len(plan["batches"]))
    return plan


cold_start.init_done()
