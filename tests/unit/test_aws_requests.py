"""What each AWS request asks IAM for, read off the request as the edge receives it."""

from __future__ import annotations

import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from local_runtime.aws_requests import checks
from local_runtime.iam import Check

BUCKET = "arn:aws:s3:::b"


def s3(method: str, path: str, query: str = "") -> list[Check]:
    builder = EnvironBuilder(method=method, path=path, query_string=query, base_url="http://127.0.0.1:4566")
    return checks("s3", "us-east-1", Request(builder.get_environ()))


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/b/output/k", "", [Check("s3:GetObject", f"{BUCKET}/output/k")]),
        ("HEAD", "/b/scripts/a.sh", "", [Check("s3:GetObject", f"{BUCKET}/scripts/a.sh")]),
        ("GET", "/b/k", "versionId=3", [Check("s3:GetObjectVersion", f"{BUCKET}/k")]),
        ("PUT", "/b/k", "tagging", [Check("s3:PutObjectTagging", f"{BUCKET}/k")]),
        ("GET", "/b/k", "response-content-type=text/plain", [Check("s3:GetObject", f"{BUCKET}/k")]),
        ("GET", "/b/k", "legal-hold", [Check("s3:UnknownGetlegal-hold", f"{BUCKET}/k")]),
        ("GET", "/b", "list-type=2&prefix=output/", [Check("s3:ListBucket", BUCKET)]),
        ("GET", "/b", "encryption", [Check("s3:GetEncryptionConfiguration", BUCKET)]),
        ("GET", "/b", "policy", [Check("s3:GetBucketPolicy", BUCKET)]),
        ("GET", "/b", "versioning", [Check("s3:GetBucketVersioning", BUCKET)]),
        ("PUT", "/b", "", [Check("s3:CreateBucket", BUCKET)]),
    ],
)
def test_s3_actions_follow_method_and_subresource(method: str, path: str, query: str, expected: list[Check]) -> None:
    assert s3(method, path, query) == expected


def test_a_transaction_asks_for_each_of_its_actions_on_each_table() -> None:
    body = {
        "TransactItems": [
            {"Put": {"TableName": "t", "Item": {}}},
            {"Update": {"TableName": "t", "Key": {}}},
            {"ConditionCheck": {"TableName": "u", "Key": {}}},
        ]
    }
    builder = EnvironBuilder(
        method="POST", path="/", data=json.dumps(body), headers={"X-Amz-Target": "DynamoDB_20120810.TransactWriteItems"}
    )
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/"
    assert checks("dynamodb", "us-east-1", Request(builder.get_environ())) == [
        Check("dynamodb:PutItem", f"{table}t"),
        Check("dynamodb:UpdateItem", f"{table}t"),
        Check("dynamodb:ConditionCheckItem", f"{table}u"),
    ]


def test_send_command_asks_for_the_document_and_each_node() -> None:
    body = {"DocumentName": "AWS-RunRemoteScript", "InstanceIds": ["mi-0123456789abcdef0", "i-0123456789abcdef0"]}
    builder = EnvironBuilder(
        method="POST", path="/", data=json.dumps(body), headers={"X-Amz-Target": "AmazonSSM.SendCommand"}
    )
    assert [c.resource for c in checks("ssm", "us-east-1", Request(builder.get_environ()))] == [
        "arn:aws:ssm:us-east-1::document/AWS-RunRemoteScript",
        "arn:aws:ssm:us-east-1:123456789012:managed-instance/mi-0123456789abcdef0",
        "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0",
    ]


def json_request(service: str, target: str, body: dict[str, object]) -> list[Check]:
    builder = EnvironBuilder(method="POST", path="/", data=json.dumps(body), headers={"X-Amz-Target": target})
    return checks(service, "us-east-1", Request(builder.get_environ()))


STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        ("DescribeStream", {"StreamArn": STREAM}, Check("dynamodb:DescribeStream", STREAM)),
        (
            "GetShardIterator",
            {"StreamArn": STREAM, "ShardId": "s", "ShardIteratorType": "TRIM_HORIZON"},
            Check("dynamodb:GetShardIterator", STREAM),
        ),
        ("GetRecords", {"ShardIterator": f"{STREAM}|1|abc"}, Check("dynamodb:GetRecords", STREAM)),
        ("GetRecords", {"ShardIterator": "opaque"}, Check("dynamodb:GetRecords", "*")),
        ("ListStreams", {"TableName": "t"}, Check("dynamodb:ListStreams", "*")),
    ],
)
def test_dynamodb_streams_operations_ask_for_the_stream(
    operation: str, body: dict[str, object], expected: Check
) -> None:
    """DynamoDB Streams signs as dynamodb: its operations are told apart by their target, on the stream's ARN."""
    assert json_request("dynamodb", f"DynamoDBStreams_20120810.{operation}", body) == [expected]


QUEUE = "arn:aws:sqs:us-east-1:123456789012:q"


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        ("ReceiveMessage", {"QueueUrl": "http://127.0.0.1:4566/123456789012/q"}, Check("sqs:ReceiveMessage", QUEUE)),
        (
            "SendMessage",
            {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q"},
            Check("sqs:SendMessage", QUEUE),
        ),
        ("SendMessageBatch", {"QueueUrl": "http://x/123456789012/q"}, Check("sqs:SendMessage", QUEUE)),
        ("DeleteMessageBatch", {"QueueUrl": "http://x/123456789012/q"}, Check("sqs:DeleteMessage", QUEUE)),
        (
            "ChangeMessageVisibilityBatch",
            {"QueueUrl": "http://x/123456789012/q"},
            Check("sqs:ChangeMessageVisibility", QUEUE),
        ),
        ("GetQueueUrl", {"QueueName": "q"}, Check("sqs:GetQueueUrl", QUEUE)),
        ("ListQueues", {}, Check("sqs:ListQueues", "*")),
    ],
)
def test_sqs_operations_ask_for_the_queue_their_url_names(
    operation: str, body: dict[str, object], expected: Check
) -> None:
    """The batch operations are authorized as the single-message actions."""
    assert json_request("sqs", f"AmazonSQS.{operation}", body) == [expected]
