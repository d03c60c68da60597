"""Workflow step: send one batch of devices its SSM command; the workflow then waits on the batch's token."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.observability import metrics, workflow_step
from longrun.services import workflow


@workflow_step
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    sent = workflow().run_batch(event["taskId"], int(event["batch"]), event["taskToken"])
    metrics.add_metric(name="CommandsSent", unit=MetricUnit.Count, value=1 if sent.get("commandId") else 0)
    return sent


cold_start.init_done()
