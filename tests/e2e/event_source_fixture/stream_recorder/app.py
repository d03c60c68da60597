"""Prints each batch it gets (``BATCH {"at": <time>, "records": [...]}`` in its log stream) and fails as a record's
NewImage asks with its ``fail`` attribute: ``raise-once`` raises the first time the record comes, ``report-once``
reports the record failed (ReportBatchItemFailures) the first time, ``always`` raises every time."""

import json
import time
from typing import Any

seen: set[str] = set()
"""The sequence numbers this execution environment has had (a stream's batches come one at a time, so to one)"""


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    print("BATCH " + json.dumps({"at": time.time(), "records": event["Records"]}))
    failures = []
    for record in event["Records"]:
        number = record["dynamodb"]["SequenceNumber"]
        fail = record["dynamodb"].get("NewImage", {}).get("fail", {}).get("S")
        first = number not in seen
        seen.add(number)
        if fail == "always" or (fail == "raise-once" and first):
            raise RuntimeError(f"record {number} fails")
        if fail == "report-once" and first:
            failures.append({"itemIdentifier": number})
    return {"batchItemFailures": failures}
