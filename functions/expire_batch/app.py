"""Workflow step: a batch's wait ran out; ask SSM how its unreported devices stand, record those that ended, stop
the others."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.observability import metrics, workflow_step
from longrun.services import workflow


@workflow_step
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    workflow().expire_batch(event["taskId"], int(event["batch"]))
    metrics.add_metric(name="BatchesExpired", unit=MetricUnit.Count, value=1)
    return {"batch": event["batch"], "expired": True}


cold_start.init_done()
