"""Lambda's event source mappings as the local runtime plays them, on a template of its own (event_source_fixture/):
a table's stream read through filters, with retries, bisection and partial batch responses; a queue whose failed
messages come back once their visibility timeout (as the function set it) expires, and end in the dead-letter
queue; a poller whose role may not read its stream, refused by IAM."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.conftest import LocalRuntimeProcess

pytestmark = pytest.mark.e2e

TEMPLATE = Path(__file__).with_name("event_source_fixture") / "template.yaml"
TABLE = "longrun-local-RecordsTable"
T = TypeVar("T")


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntimeProcess]:
    runtime = LocalRuntimeProcess.start("--template", str(TEMPLATE))
    try:
        yield runtime
    finally:
        refused = runtime.stop(refusals_expected=True)
    assert {denial["principal"] for denial in refused} <= {"UnreadableStreamFunction"}, refused


def wait_for(found: Callable[[], T | None], timeout: float = 10) -> T:
    deadline = time.monotonic() + timeout
    while (result := found()) is None:
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)
    return result


def printed(runtime: LocalRuntimeProcess, function: str, prefix: str) -> list[dict[str, Any]]:
    """What the function printed after ``prefix `` in its log streams, one JSON document a line, in time order."""
    found = []
    for stream in (runtime.log.parent / "logs" / f"longrun-local-{function}").glob("*.log"):
        for line in stream.read_text().splitlines():
            if line.startswith(prefix + " "):
                found.append(json.loads(line.removeprefix(prefix + " ")))
    return sorted(found, key=lambda document: float(document["at"]))


def batches(runtime: LocalRuntimeProcess, partition: str) -> list[list[dict[str, Any]]]:
    """Each batch of stream records StreamRecorderFunction got, of the items under this partition key."""
    found = []
    for batch in printed(runtime, "StreamRecorderFunction", "BATCH"):
        records = [r for r in batch["records"] if r["dynamodb"]["Keys"]["PK"]["S"] == partition]
        if records:
            found.append(records)
    return found


def sort_keys(batches: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [[record["dynamodb"]["Keys"]["SK"]["S"] for record in batch] for batch in batches]


def put(partition: str, sort_key: str, **attributes: str) -> dict[str, Any]:
    item = {"PK": {"S": partition}, "SK": {"S": sort_key}} | {name: {"S": value} for name, value in attributes.items()}
    return {"Put": {"TableName": TABLE, "Item": item}}


def test_a_transactions_writes_reach_the_function_with_their_old_and_new_images(runtime: LocalRuntimeProcess) -> None:
    dynamodb = runtime.service.aws("dynamodb")
    dynamodb.transact_write_items(TransactItems=[put("images", "KEEP#a", v="1"), put("images", "KEEP#c", v="1")])
    dynamodb.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": {"PK": {"S": "images"}, "SK": {"S": "KEEP#a"}},
                    "UpdateExpression": "SET v = :v",
                    "ExpressionAttributeValues": {":v": {"S": "2"}},
                }
            },
            put("images", "KEEP#b", v="1"),
            {"Delete": {"TableName": TABLE, "Key": {"PK": {"S": "images"}, "SK": {"S": "KEEP#c"}}}},
        ]
    )
    records = wait_for(lambda: found if len(found := [r for b in batches(runtime, "images") for r in b]) >= 5 else None)
    assert [(r["eventName"], r["dynamodb"]["Keys"]["SK"]["S"]) for r in records] == [
        ("INSERT", "KEEP#a"),
        ("INSERT", "KEEP#c"),
        ("MODIFY", "KEEP#a"),
        ("INSERT", "KEEP#b"),
        ("REMOVE", "KEEP#c"),
    ]
    modified, inserted, removed = (record["dynamodb"] for record in records[2:])
    assert (modified["OldImage"]["v"], modified["NewImage"]["v"]) == ({"S": "1"}, {"S": "2"})
    assert "OldImage" not in inserted and inserted["NewImage"]["SK"] == {"S": "KEEP#b"}
    assert "NewImage" not in removed and removed["OldImage"]["v"] == {"S": "1"}
    numbers = [int(record["dynamodb"]["SequenceNumber"]) for record in records]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5
    stream_arn = dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    record = records[2]  # Lambda's DynamoDB event record, field by field
    assert set(record) == {
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    }
    assert (record["eventVersion"], record["eventSource"], record["awsRegion"]) == ("1.1", "aws:dynamodb", "us-east-1")
    assert record["eventSourceARN"] == stream_arn
    assert set(modified) == {
        "ApproximateCreationDateTime", "Keys", "NewImage", "OldImage", "SequenceNumber", "SizeBytes", "StreamViewType"
    }  # fmt: skip
    assert (
        isinstance(modified["ApproximateCreationDateTime"], int)
        and abs(modified["ApproximateCreationDateTime"] - time.time()) < 60
    )
    assert modified["StreamViewType"] == "NEW_AND_OLD_IMAGES" and modified["SizeBytes"] > 0
    assert modified["Keys"] == {"PK": {"S": "images"}, "SK": {"S": "KEEP#a"}}


def test_records_that_match_no_filter_are_dropped(runtime: LocalRuntimeProcess) -> None:
    dynamodb = runtime.service.aws("dynamodb")
    for sort_key in ("DROP#1", "KEEP#1", "DROP#2", "KEEP#2"):
        dynamodb.transact_write_items(TransactItems=[put("filters", sort_key)])
    delivered = lambda: [key for batch in sort_keys(batches(runtime, "filters")) for key in batch]  # noqa: E731
    wait_for(lambda: True if len(delivered()) >= 2 else None)
    time.sleep(0.5)  # two polls more: nothing else comes
    assert delivered() == ["KEEP#1", "KEEP#2"]


def test_a_failing_batch_is_split_and_retried_until_it_succeeds(runtime: LocalRuntimeProcess) -> None:
    """BisectBatchOnFunctionError: the batch whose invocation raised is retried in halves, in order."""
    items = [put("bisect", "KEEP#1", fail="raise-once")] + [put("bisect", f"KEEP#{n}") for n in (2, 3, 4)]
    runtime.service.aws("dynamodb").transact_write_items(TransactItems=items)
    found = wait_for(lambda: keys if len(keys := sort_keys(batches(runtime, "bisect"))) >= 3 else None)
    assert found == [["KEEP#1", "KEEP#2", "KEEP#3", "KEEP#4"], ["KEEP#1", "KEEP#2"], ["KEEP#3", "KEEP#4"]]


def test_a_reported_batch_item_failure_resumes_the_batch_from_that_record(runtime: LocalRuntimeProcess) -> None:
    items = [put("partial", "KEEP#1"), put("partial", "KEEP#2", fail="report-once"), put("partial", "KEEP#3")]
    runtime.service.aws("dynamodb").transact_write_items(TransactItems=items)
    found = wait_for(lambda: keys if len(keys := sort_keys(batches(runtime, "partial"))) >= 2 else None)
    assert found == [["KEEP#1", "KEEP#2", "KEEP#3"], ["KEEP#2", "KEEP#3"]]


def test_a_record_that_keeps_failing_is_discarded_after_the_retries_and_the_shard_moves_on(
    runtime: LocalRuntimeProcess,
) -> None:
    dynamodb = runtime.service.aws("dynamodb")
    dynamodb.transact_write_items(TransactItems=[put("poison", "KEEP#1", fail="always")])
    wait_for(lambda: batches(runtime, "poison") or None)
    dynamodb.transact_write_items(TransactItems=[put("poison", "KEEP#2")])
    found = wait_for(lambda: keys if len(keys := sort_keys(batches(runtime, "poison"))) >= 4 else None)
    assert found == [["KEEP#1"], ["KEEP#1"], ["KEEP#1"], ["KEEP#2"]]  # the first try, and MaximumRetryAttempts: 2
    assert "StreamRecorderFunctionChanges: 1 records discarded after 2 retries" in runtime.log.read_text()


def queue_url(runtime: LocalRuntimeProcess, prefix: str) -> str:
    return str(runtime.service.aws("sqs").list_queues(QueueNamePrefix=f"longrun-local-{prefix}")["QueueUrls"][0])


def receipts(runtime: LocalRuntimeProcess, message: str) -> list[dict[str, Any]]:
    """Each time QueueRecorderFunction got the message whose body's id is ``message``: {"at", "record"}."""
    return [
        document
        for document in printed(runtime, "QueueRecorderFunction", "MESSAGE")
        if json.loads(document["record"]["body"])["id"] == message
    ]


def test_a_message_reported_failed_comes_back_when_the_visibility_timeout_the_function_set_expires(
    runtime: LocalRuntimeProcess,
) -> None:
    sqs = runtime.service.aws("sqs")
    url = queue_url(runtime, "WorkQueue")
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"id": "delayed", "action": "retry-after-1s"}),
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
    )
    first, second = wait_for(lambda: found if len(found := receipts(runtime, "delayed")) >= 2 else None)
    assert 0.9 <= second["at"] - first["at"] <= 3.5  # ChangeMessageVisibility(VisibilityTimeout=1), not the queue's 30
    record = second["record"]  # Lambda's SQS event record, field by field
    assert (
        first["record"]["attributes"]["ApproximateReceiveCount"],
        record["attributes"]["ApproximateReceiveCount"],
    ) == (
        "1",
        "2",
    )
    assert set(record) == {
        "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
        "md5OfMessageAttributes", "eventSource", "eventSourceARN", "awsRegion",
    }  # fmt: skip
    assert record["messageId"] == sent["MessageId"] and record["md5OfBody"] == sent["MD5OfMessageBody"]
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        record["attributes"]
    )
    assert record["messageAttributes"] == {
        "kind": {"stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
    }
    assert (record["eventSource"], record["awsRegion"]) == ("aws:sqs", "us-east-1")
    assert record["eventSourceARN"].startswith("arn:aws:sqs:us-east-1:123456789012:longrun-local-WorkQueue-")

    def deleted() -> bool | None:
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        in_queue = int(counts["ApproximateNumberOfMessages"]) + int(counts["ApproximateNumberOfMessagesNotVisible"])
        return True if in_queue == 0 else None

    wait_for(deleted)  # it succeeded the second time: deleted


def test_a_batch_whose_invocation_fails_is_left_in_the_queue(runtime: LocalRuntimeProcess) -> None:
    url = queue_url(runtime, "WorkQueue")
    runtime.service.aws("sqs").send_message(
        QueueUrl=url, MessageBody=json.dumps({"id": "raised", "action": "raise-once"})
    )
    first, second = wait_for(lambda: found if len(found := receipts(runtime, "raised")) >= 2 else None)
    assert second["record"]["messageId"] == first["record"]["messageId"]
    assert second["record"]["attributes"]["ApproximateReceiveCount"] == "2"


def test_a_message_that_keeps_failing_moves_to_the_dead_letter_queue_after_max_receive_count(
    runtime: LocalRuntimeProcess,
) -> None:
    sqs = runtime.service.aws("sqs")
    sqs.send_message(
        QueueUrl=queue_url(runtime, "WorkQueue"), MessageBody=json.dumps({"id": "poison", "action": "fail"})
    )
    dead_letters = queue_url(runtime, "DeadLetters")

    def dead() -> list[dict[str, Any]] | None:
        return sqs.receive_message(QueueUrl=dead_letters, WaitTimeSeconds=1).get("Messages") or None

    moved = wait_for(dead, timeout=12)
    assert json.loads(moved[0]["Body"]) == {"id": "poison", "action": "fail"}
    counts = [document["record"]["attributes"]["ApproximateReceiveCount"] for document in receipts(runtime, "poison")]
    assert counts == ["1", "2", "3"]  # the RedrivePolicy's maxReceiveCount


def test_a_poller_whose_role_may_not_read_the_stream_is_refused_and_delivers_nothing(
    runtime: LocalRuntimeProcess,
) -> None:
    """The function's role lacks AWSLambdaDynamoDBExecutionRole: Lambda would not create its mapping."""
    report = runtime.service.iam()
    assert report is not None
    refused = [denial for denial in report["denials"] if denial["principal"] == "UnreadableStreamFunction"]
    stream_arn = runtime.service.aws("dynamodb").describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    assert [(denial["action"], denial["resource"]) for denial in refused] == [("dynamodb:DescribeStream", stream_arn)]
    assert refused[0]["message"] == (
        "User: arn:aws:sts::123456789012:assumed-role/longrun-local-UnreadableStreamRole"
        f"/longrun-local-UnreadableStreamFunction is not authorized to perform: dynamodb:DescribeStream on resource:"
        f" {stream_arn} because no identity-based policy allows the dynamodb:DescribeStream action"
    )
    runtime.service.aws("dynamodb").transact_write_items(TransactItems=[put("refused", "KEEP#1")])
    wait_for(lambda: batches(runtime, "refused") or None)  # the other mapping of the stream delivers it
    assert not (runtime.log.parent / "logs" / "longrun-local-UnreadableStreamFunction").exists()
    assert "UnreadableStreamMapping: User: arn:aws:sts::123456789012:assumed-role/" in runtime.log.read_text()
