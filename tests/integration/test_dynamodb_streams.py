"""A table's stream as DynamoDB Streams writes it, for every write path the product uses: PutItem, UpdateItem,
DeleteItem and TransactWriteItems. One record per change, in write order, with the images before and after; none
for a write that changed nothing, nor for a transaction that was cancelled or undone (against moto, the local
runtime's dynamodb module replaces moto's own records, which get each of these wrong)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local_runtime import dynamodb as local_dynamodb

TABLE = "streamed"


@pytest.fixture
def table(aws: None) -> Any:
    client = boto3.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return client


def streams_client() -> Any:
    """DynamoDB Streams on its regional endpoint (moto does not know the account-based ones boto3 now prefers)."""
    return boto3.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))


def stream_records() -> list[dict[str, Any]]:
    """Every record of the table's stream, from its trim horizon."""
    arn = boto3.client("dynamodb").describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    streams = streams_client()
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return list(streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"])


def changes(records: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(event, key, old image's attributes but the key, new image's) of each record."""

    def image(record: dict[str, Any], name: str) -> dict[str, Any] | None:
        found = record["dynamodb"].get(name)
        return None if found is None else {k: v for k, v in found.items() if k != "PK"}

    return [
        (r["eventName"], r["dynamodb"]["Keys"]["PK"]["S"], image(r, "OldImage"), image(r, "NewImage")) for r in records
    ]


def key(name: str) -> dict[str, Any]:
    return {"PK": {"S": name}}


def test_each_write_path_records_its_change_with_both_images_in_order(table: Any) -> None:
    table.put_item(TableName=TABLE, Item=key("a") | {"n": {"N": "1"}, "m": {"M": {"k": {"S": "x"}}}})
    table.update_item(
        TableName=TABLE,
        Key=key("a"),
        UpdateExpression="SET n = n + :one, m.k = :y",
        ExpressionAttributeValues={":one": {"N": "1"}, ":y": {"S": "y"}},
    )
    table.update_item(  # an upsert: one INSERT with the whole new item (moto records two, the first key only)
        TableName=TABLE, Key=key("b"), UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": {"N": "5"}}
    )
    table.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": TABLE, "Item": key("c")}},
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": key("a"),
                    "UpdateExpression": "REMOVE m",
                }
            },
            {"Delete": {"TableName": TABLE, "Key": key("b")}},
        ]
    )
    table.delete_item(TableName=TABLE, Key=key("c"))
    records = stream_records()
    assert changes(records) == [
        ("INSERT", "a", None, {"n": {"N": "1"}, "m": {"M": {"k": {"S": "x"}}}}),
        (
            "MODIFY",
            "a",
            {"n": {"N": "1"}, "m": {"M": {"k": {"S": "x"}}}},
            {"n": {"N": "2"}, "m": {"M": {"k": {"S": "y"}}}},
        ),
        ("INSERT", "b", None, {"n": {"N": "5"}}),
        ("INSERT", "c", None, {}),
        ("MODIFY", "a", {"n": {"N": "2"}, "m": {"M": {"k": {"S": "y"}}}}, {"n": {"N": "2"}}),
        ("REMOVE", "b", {"n": {"N": "5"}}, None),
        ("REMOVE", "c", {}, None),
    ]
    numbers = [int(record["dynamodb"]["SequenceNumber"]) for record in records]
    assert numbers == sorted(set(numbers))
    assert {(r["eventVersion"], r["eventSource"], r["awsRegion"]) for r in records} == {
        ("1.1", "aws:dynamodb", "us-east-1")
    }
    assert all(record["dynamodb"]["ApproximateCreationDateTime"].microsecond == 0 for record in records)
    # the key (PK: a, 3 bytes) and each image (PK: 3, n: 1 + 2, m: 1 + 3 + 1 + 1 + 1), by DynamoDB's item sizes
    assert records[1]["dynamodb"]["SizeBytes"] == 3 + 13 + 13


def test_a_write_that_changes_nothing_records_nothing(table: Any) -> None:
    table.put_item(TableName=TABLE, Item=key("a") | {"n": {"N": "1"}})
    table.put_item(TableName=TABLE, Item=key("a") | {"n": {"N": "1"}})
    table.update_item(
        TableName=TABLE, Key=key("a"), UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": {"N": "1"}}
    )
    table.delete_item(TableName=TABLE, Key=key("nothing-there"))
    assert [record["eventName"] for record in stream_records()] == ["INSERT"]


def test_a_cancelled_or_undone_transaction_records_nothing(table: Any) -> None:
    table.put_item(TableName=TABLE, Item=key("a") | {"n": {"N": "1"}})
    with pytest.raises(ClientError) as cancelled:  # a condition fails: nothing is written
        table.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": key("b")}},
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": key("a"),
                        "ConditionExpression": "n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
            ]
        )
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    with pytest.raises(ClientError):  # the second write fails once the first is written: the first is undone
        table.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": key("c")}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": key("a"),
                        "UpdateExpression": "SET n = n + :text",
                        "ExpressionAttributeValues": {":text": {"S": "x"}},
                    }
                },
            ]
        )
    assert "Item" not in table.get_item(TableName=TABLE, Key=key("c"))
    assert [record["eventName"] for record in stream_records()] == ["INSERT"]


def test_a_shard_iterator_expires_after_15_minutes(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = table.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    streams = streams_client()
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    streams.get_records(ShardIterator=iterator)
    monkeypatch.setattr(local_dynamodb, "SHARD_ITERATOR_SECONDS", 0)
    with pytest.raises(ClientError) as expired:
        streams.get_records(ShardIterator=iterator)
    assert expired.value.response["Error"]["Code"] == "ExpiredIteratorException"
