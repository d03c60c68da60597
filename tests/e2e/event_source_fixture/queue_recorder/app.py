"""Prints each message it gets (``MESSAGE {"at": <time>, "record": {...}}`` in its log stream) and does as its
body's ``action`` asks: ``retry-after-1s``: on its first receive, makes it visible again in a second
(ChangeMessageVisibility) and reports it failed (ReportBatchItemFailures); ``raise-once``: on the first receive,
does the same for the whole batch and raises; ``fail``: makes it visible again at once and reports it failed, every
time."""

import json
import os
import time
from typing import Any

import boto3

sqs = boto3.client("sqs")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        print("MESSAGE " + json.dumps({"at": time.time(), "record": record}))
        action = json.loads(record["body"])["action"]
        first = record["attributes"]["ApproximateReceiveCount"] == "1"
        if action == "raise-once" and first:
            for each in event["Records"]:
                _visible_in(each, 1)
            raise RuntimeError("the whole batch fails")
        if action == "retry-after-1s" and first:
            _visible_in(record, 1)
            failures.append({"itemIdentifier": record["messageId"]})
        if action == "fail":
            _visible_in(record, 0)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def _visible_in(record: dict[str, Any], seconds: int) -> None:
    sqs.change_message_visibility(
        QueueUrl=os.environ["QUEUE_URL"], ReceiptHandle=record["receiptHandle"], VisibilityTimeout=seconds
    )
