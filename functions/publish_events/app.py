"""The change feed's publisher: each batch of the tasks table's stream becomes task events, pushed to the event
bus, the tasks' WebSocket subscribers and their owners' webhook endpoints."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.services import publisher

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    retry_from = publisher().publish(event.get("Records", []))
    # ReportBatchItemFailures: Lambda hands the batch over again from this record
    return {"batchItemFailures": [{"itemIdentifier": retry_from}] if retry_from else []}


cold_start.init_done()
