"""moto's hot paths made cheaper (local_runtime.moto_speedups) answer exactly what moto answers."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.serialize import BaseJSONSerializer, JSONSerializer, XFormedAttributePicker
from moto.core.utils import get_service_model
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import dynamo_to_dict
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from local_runtime import moto_speedups

ITEMS: list[dict[str, Any]] = [
    {"PK": {"S": "TASK#1"}, "SK": {"S": "DEVICE#000001"}, "n": {"N": "12.50"}, "empty": {"S": ""}},
    {"flag": {"BOOL": True}, "off": {"BOOL": False}, "nothing": {"NULL": True}},
    {"tags": {"SS": ["a", "b"]}, "numbers": {"NS": ["1", "-2.5"]}, "none": {"L": []}, "blank": {"M": {}}},
    {
        "counts": {"M": {"RUNNING": {"N": "3"}, "SUCCESS": {"N": "0"}}},
        "deep": {"L": [{"M": {"x": {"L": [{"S": "y"}]}}}]},
    },
    {"blob": {"B": b"\x00\x01binary"}, "blobs": {"BS": [b"a", b"b"]}},  # binary: moto's own path
    {"nested": {"M": {"blob": {"B": b"\xff"}, "s": {"S": "t"}}}},  # binary inside a map
    {"odd": {"N": 5}, "weird": {"BOOL": "true"}, "two": {"S": "a", "N": "1"}},  # not as DynamoDB types them
    {"unknown": {"X": "1"}, "list": {"L": [{"S": "a"}, {"B": b"b"}]}},
]


def _serialize(operation: str, result: dict[str, Any]) -> str:
    model = get_service_model("dynamodb").operation_model(operation)
    serializer = JSONSerializer(operation_model=model, pretty_print=False, value_picker=XFormedAttributePicker())
    return str(serializer.serialize(dynamo_to_dict(result))["body"])


@pytest.fixture
def fast() -> None:
    moto_speedups.install()


@pytest.mark.parametrize("item", ITEMS)
def test_an_item_serializes_as_moto_serializes_it(fast: None, item: dict[str, Any], monkeypatch: Any) -> None:
    results = {
        "Query": {"Count": 1, "ScannedCount": 1, "Items": [item], "LastEvaluatedKey": {"PK": {"S": "x"}}},
        "GetItem": {"Item": item, "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 0.5}},
        "UpdateItem": {"Attributes": item},
    }
    fast_bodies = {operation: _serialize(operation, result) for operation, result in results.items()}
    patched = BaseJSONSerializer._serialize_type_structure
    monkeypatch.setattr(BaseJSONSerializer, "_serialize_type_structure", patched.__wrapped__)  # type: ignore[attr-defined]
    for operation, result in results.items():
        assert fast_bodies[operation] == _serialize(operation, result), operation


def test_binary_values_are_still_base64_encoded(fast: None) -> None:
    body = json.loads(_serialize("GetItem", {"Item": {"blob": {"B": b"\x00\x01"}}}))
    assert body == {"Item": {"blob": {"B": base64.b64encode(b"\x00\x01").decode()}}}


def test_only_plain_values_take_the_short_path() -> None:
    assert moto_speedups.plain_attribute_value({"M": {"a": {"L": [{"NULL": True}, {"NS": ["1"]}]}}})
    assert not moto_speedups.plain_attribute_value({"M": {"a": {"B": b"x"}}})
    assert not moto_speedups.plain_attribute_value({"S": "a", "N": "1"})
    assert not moto_speedups.plain_attribute_value({"N": 1})
    assert not moto_speedups.plain_attribute_value({"SS": ["a", 1]})


def test_the_backend_of_a_host_is_found_once(fast: None, monkeypatch: Any) -> None:
    dispatcher = DomainDispatcherApplication(create_backend_app)
    hosts = ["dynamodb.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com", "moto_api", "dynamodbstreams", None]
    expected = [dispatcher.get_backend_for_host.__wrapped__(dispatcher, host) for host in hosts]  # type: ignore[attr-defined]
    assert [dispatcher.get_backend_for_host(host) for host in hosts] == expected
    monkeypatch.setattr("moto.backends.list_of_moto_modules", lambda: pytest.fail("looked up again"))
    assert [dispatcher.get_backend_for_host(host) for host in hosts] == expected


VALUES: list[dict[str, Any]] = [
    {"S": "TASK#1"},
    {"S": ""},
    {"S": "é"},
    {"B": "AAE="},
    {"N": "12.50"},
    {"BOOL": True},
    {"NULL": True},
    {"SS": ["a", "b"]},
    {"L": [{"S": "a"}, {"N": "1"}]},
    {"M": {"k": {"S": "v"}}},
]


@pytest.mark.parametrize("value", VALUES)
def test_values_compare_and_size_as_moto_compares_and_sizes_them(fast: None, value: dict[str, Any]) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    original_cast = DynamoType.cast_value.fget.__wrapped__  # type: ignore[attr-defined]
    original_size = DynamoType.size.__wrapped__  # type: ignore[attr-defined]
    typed = DynamoType(value)
    assert typed.cast_value == original_cast(typed)
    assert typed.size() == original_size(typed)
    for other in VALUES:
        assert (typed == DynamoType(other)) == (
            typed.type == other_type(other) and original_cast(typed) == original_cast(DynamoType(other))
        )


def other_type(value: dict[str, Any]) -> str:
    return next(iter(value))


QUERIES: list[dict[str, Any]] = [
    {"KeyConditionExpression": "PK = :pk", "ExpressionAttributeValues": {":pk": {"S": "TASK#2"}}},
    {"KeyConditionExpression": "PK = :pk", "ExpressionAttributeValues": {":pk": {"S": "TASK#9"}}},  # no such one
    {
        "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#1"}, ":p": {"S": "DEVICE#"}},
        "ScanIndexForward": False,
        "Limit": 3,
    },
    {
        "KeyConditionExpression": "PK = :pk AND SK BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#1"}, ":a": {"S": "DEVICE#00002"}, ":b": {"S": "DEVICE#00005"}},
        "ProjectionExpression": "SK",
    },
    {
        "KeyConditionExpression": "PK = :pk",
        "FilterExpression": "n > :n",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#1"}, ":n": {"N": "3"}},
        "Limit": 4,
        "ExclusiveStartKey": {"PK": {"S": "TASK#1"}, "SK": {"S": "DEVICE#00001"}},
    },
    {
        "KeyConditionExpression": "PK = :pk AND SK < :s",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#2"}, ":s": {"S": "DEVICE#00005"}},
        "Limit": 2,
    },
    {  # exactly Limit items meet the condition, and more items follow them
        "KeyConditionExpression": "PK = :pk AND SK BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#3"}, ":a": {"S": "DEVICE#00001"}, ":b": {"S": "DEVICE#00004"}},
        "Limit": 3,
    },
    {
        "KeyConditionExpression": "PK = :pk AND SK BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#3"}, ":a": {"S": "DEVICE#00001"}, ":b": {"S": "DEVICE#00004"}},
        "Limit": 3,
        "ScanIndexForward": False,
    },
    {  # the last items of the partition meet it: nothing follows
        "KeyConditionExpression": "PK = :pk AND SK >= :s",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#2"}, ":s": {"S": "DEVICE#00007"}},
        "Limit": 2,
    },
    {
        "KeyConditionExpression": "PK = :pk AND SK > :s",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#2"}, ":s": {"S": "DEVICE#00001"}},
        "Limit": 2,
        "ExclusiveStartKey": {"PK": {"S": "TASK#2"}, "SK": {"S": "DEVICE#00004"}},
    },
    {  # none meets it
        "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#1"}, ":p": {"S": "BATCH#"}},
    },
    {
        "KeyConditionExpression": "PK = :pk AND SK = :s",
        "ExpressionAttributeValues": {":pk": {"S": "TASK#1"}, ":s": {"S": "DEVICE#00009"}},
        "ScanIndexForward": False,
        "Limit": 1,
    },
    {
        "IndexName": "ByN",
        "KeyConditionExpression": "g = :g",
        "ExpressionAttributeValues": {":g": {"S": "all"}},
    },
]


@pytest.mark.parametrize("query", QUERIES)
def test_a_query_reads_its_partition_and_answers_as_moto_does(
    fast: None, query: dict[str, Any], monkeypatch: Any
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="t",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("PK", "SK", "g")],
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "ByN",
                    "KeySchema": [
                        {"AttributeName": "g", "KeyType": "HASH"},
                        {"AttributeName": "SK", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        for task in (3, 1, 2):
            for device in (7, 0, 5, 2, 9, 1, 4):
                dynamodb.put_item(
                    TableName="t",
                    Item={
                        "PK": {"S": f"TASK#{task}"},
                        "SK": {"S": f"DEVICE#{device:05d}"},
                        "n": {"N": str(device)},
                        "g": {"S": "all"},
                    },
                )
        fast_answer = dynamodb.query(TableName="t", **query)
        monkeypatch.setattr(Table, "query", Table.query.__wrapped__)  # type: ignore[attr-defined]
        monkeypatch.setattr(Table, "all_items", Table.all_items.__wrapped__)  # type: ignore[attr-defined]
        assert fast_answer["Items"] == dynamodb.query(TableName="t", **query)["Items"]
        assert fast_answer.get("LastEvaluatedKey") == dynamodb.query(TableName="t", **query).get("LastEvaluatedKey")


DEFINITION = json.dumps(
    {
        "StartAt": "Pass",
        "States": {"Pass": {"Type": "Pass", "Parameters": {"id.$": "$.id"}, "ResultPath": "$.out", "End": True}},
    }
)


def test_a_definition_is_parsed_once_and_built_afresh_for_each_execution(fast: None) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser, ASLParserException

    first_program, first_tree = AmazonStateLanguageParser.parse(DEFINITION)
    program, tree = AmazonStateLanguageParser.parse(DEFINITION)
    assert tree is first_tree
    assert program is not first_program
    assert type(program) is type(first_program)
    for _ in range(2):  # a definition with syntax errors is refused every time
        with pytest.raises(ASLParserException):
            AmazonStateLanguageParser.parse('{"StartAt": ')


def test_an_execution_answers_as_before(fast: None, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        machine = sfn.create_state_machine(name="m", definition=DEFINITION, roleArn="arn:aws:iam::123456789012:role/r")[
            "stateMachineArn"
        ]
        outputs = []
        for number, run in enumerate(("a", "b", "a")):
            arn = sfn.start_execution(stateMachineArn=machine, name=f"run-{number}", input=json.dumps({"id": run}))[
                "executionArn"
            ]
            while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
                time.sleep(0.01)
            outputs.append(json.loads(described["output"]))
        assert outputs == [
            {"id": "a", "out": {"id": "a"}},
            {"id": "b", "out": {"id": "b"}},
            {"id": "a", "out": {"id": "a"}},
        ]


def test_a_json_path_is_parsed_once_and_answers_as_before(fast: None, monkeypatch: Any) -> None:
    import jsonpath_ng.ext
    from moto.stepfunctions.parser.asl.utils import json_path

    assert json_path.parse("$.a[0].b") is json_path.parse("$.a[0].b")
    data = {"a": [{"b": 1}, {"b": 2}], "c": {"d": "e"}}
    paths = ["$.a[0].b", "$.a[*].b", "$.c", "$.c.d", "$"]
    answers = [json_path.extract_json(path, data) for path in paths * 2]
    monkeypatch.setattr(json_path, "parse", jsonpath_ng.ext.parse)
    assert answers == [json_path.extract_json(path, data) for path in paths * 2]
    with pytest.raises(json_path.NoSuchJsonPathError):
        json_path.extract_json("$.missing", {"a": 1})


def test_a_message_past_its_retention_is_not_received(fast: None, monkeypatch: Any) -> None:
    from moto.sqs.models import SQSBackend, sqs_backends

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        backend = sqs_backends["123456789012"]["us-east-1"]
        for body, age in (("old", 61), ("new", 59)):
            sqs.send_message(QueueUrl=url, MessageBody=body)
            message = backend.get_queue("q")._messages[-1]
            message.sent_timestamp -= age * 1000
        patched = SQSBackend.is_message_valid_based_on_retention_period
        original = patched.__wrapped__  # type: ignore[attr-defined]
        old, new = backend.get_queue("q")._messages
        for message in (old, new):
            assert patched(backend, "q", message) == original(backend, "q", message)
        assert [patched(backend, "q", message) for message in (old, new)] == [False, True]


def test_a_sent_message_is_deduplicated_and_counted_as_moto_does(fast: None, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        fifo = sqs.create_queue(
            QueueName="q.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]
        plain = sqs.create_queue(QueueName="q")["QueueUrl"]
        for _ in range(2):  # the same body twice: content-based deduplication keeps one
            sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")
        sqs.send_message(QueueUrl=plain, MessageBody="now")
        sqs.send_message(QueueUrl=plain, MessageBody="later", DelaySeconds=60)
        sqs.receive_message(QueueUrl=plain, VisibilityTimeout=60)
        sqs.send_message(QueueUrl=plain, MessageBody="waiting")
        counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
        counts.append("ApproximateNumberOfMessagesNotVisible")
        assert sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=counts)["Attributes"] == {
            "ApproximateNumberOfMessages": "1",
            "ApproximateNumberOfMessagesDelayed": "0",
            "ApproximateNumberOfMessagesNotVisible": "0",
        }
        assert sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=counts)["Attributes"] == {
            "ApproximateNumberOfMessages": "1",
            "ApproximateNumberOfMessagesDelayed": "1",
            "ApproximateNumberOfMessagesNotVisible": "1",
        }


def test_sqs_reads_the_same_clock(fast: None) -> None:
    from moto.core import utils
    from moto.sqs import models

    before = utils.unix_time_millis()
    now = models.unix_time_millis()  # type: ignore[attr-defined]
    assert before <= now <= utils.unix_time_millis() + 1
    assert models.unix_time_millis(utils.utcfromtimestamp(12)) == 12_000  # type: ignore[attr-defined]


def test_an_existing_account_is_found_without_the_lock(fast: None, monkeypatch: Any) -> None:
    from moto.core import base_backend
    from moto.sqs.models import sqs_backends

    account = sqs_backends["210987654321"]
    monkeypatch.setattr(base_backend, "backend_lock", None)  # taking it would raise
    assert sqs_backends["210987654321"] is account
