"""Delivers queued webhook events, one attempt per receipt, every delivery of a batch at once (a slow receiver
delays no other): a delivery to try again is left on the queue, hidden until its next attempt is due."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.services import deliveries

logger = Logger()


def _deliver(record: dict[str, Any]) -> bool:
    """Make one attempt; True when the message is done with."""
    try:
        attempt = int(record["attributes"]["ApproximateReceiveCount"])
        return deliveries().attempt(json.loads(record["body"]), attempt, record["receiptHandle"])
    except Exception:
        logger.exception("delivery attempt failed", extra={"message_id": record["messageId"]})
        return False  # back on the queue after its visibility timeout


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records: list[dict[str, Any]] = event["Records"]
    with ThreadPoolExecutor(max_workers=max(1, len(records))) as pool:
        done = list(pool.map(_deliver, records))
    failures = [{"itemIdentifier": record["messageId"]} for record, ok in zip(records, done, strict=True) if not ok]
    return {"batchItemFailures": failures}


cold_start.init_done()
