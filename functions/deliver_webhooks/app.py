"""Delivers queued webhook events, one attempt per receipt, every delivery of a batch at once (a slow receiver
delays no other): a delivery to try again is left on the queue, hidden until its next attempt is due."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import SQSEvent, event_source
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun.services import deliveries

logger = Logger()
tracer = Tracer()


def _deliver(record: SQSRecord) -> bool:
    """Make one attempt; True when the message is done with."""
    try:
        attempt = int(record.attributes.approximate_receive_count)
        return deliveries().attempt(json.loads(record.body), attempt, record.receipt_handle)
    except Exception:
        logger.exception("delivery attempt failed", extra={"message_id": record.message_id})
        return False  # back on the queue after its visibility timeout


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_source(data_class=SQSEvent)
def handler(event: SQSEvent, context: LambdaContext) -> dict[str, Any]:
    records = list(event.records)
    with ThreadPoolExecutor(max_workers=max(1, len(records))) as pool:
        done = list(pool.map(_deliver, records))
    failures = [{"itemIdentifier": record.message_id} for record, ok in zip(records, done, strict=True) if not ok]
    return {"batchItemFailures": failures}
