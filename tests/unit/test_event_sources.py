"""Event source mappings as the local runtime deploys them: read from the template after the SAM transform, with
Lambda's defaults, and refused where CreateEventSourceMapping refuses them; the queues, streams and names they
read."""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path

import pytest

from local_runtime import template
from local_runtime.event_sources import InvalidMapping, validated_filters
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "e2e" / "event_source_fixture" / "template.yaml"
EDGE = "http://127.0.0.1:4566"
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/longrun-local-RecordsTable"


@cache
def stack() -> template.LocalStack:
    return template.load(ROOT, "longrun-local", "us-east-1", template_file=FIXTURE, endpoint_url=EDGE)


def mapping(logical_id: str) -> template.EventSourceMapping:
    return next(found for found in stack().event_source_mappings if found.logical_id == logical_id)


def test_sams_events_become_mappings_with_lambdas_defaults() -> None:
    stream = mapping("StreamRecorderFunctionChanges")
    assert stream == template.EventSourceMapping(
        logical_id="StreamRecorderFunctionChanges",
        function="StreamRecorderFunction",
        source_arn=f"{TABLE}/stream/*",  # the table's stream, whatever label DynamoDB gives it
        batch_size=100,
        batching_window_seconds=0,
        starting_position="TRIM_HORIZON",
        filter_patterns=('{"dynamodb": {"Keys": {"SK": {"S": [{"prefix": "KEEP"}]}}}}',),
        function_response_types=("ReportBatchItemFailures",),
        bisect_on_function_error=True,
        maximum_retry_attempts=2,
        enabled=True,
    )
    queue = mapping("QueueRecorderFunctionWork")
    assert queue.from_queue and not stream.from_queue
    assert queue.source_arn == stack().arn("WorkQueue")
    assert (queue.batch_size, queue.starting_position, queue.maximum_retry_attempts) == (10, None, -1)
    assert mapping("UnreadableStreamMapping").batch_size == 100  # Lambda's default for a stream


def test_queues_are_named_as_cloudformation_names_them_dead_letter_queues_first() -> None:
    (dead_letters, dead_attributes), (work, work_attributes) = stack().queues()
    assert dead_letters.startswith("longrun-local-DeadLetters-") and len(dead_letters.rsplit("-", 1)[1]) == 12
    assert (
        work
        == stack().physical_id("WorkQueue")
        == template.load(ROOT, "longrun-local", "us-east-1", template_file=FIXTURE).physical_id("WorkQueue")
    )  # the same name every time
    assert dead_attributes == {}
    assert work_attributes["VisibilityTimeout"] == "30"
    assert json.loads(work_attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": f"arn:aws:sqs:us-east-1:123456789012:{dead_letters}",
        "maxReceiveCount": 3,
    }
    assert stack().ref("WorkQueue") == f"{EDGE}/123456789012/{work}"
    assert stack().functions["QueueRecorderFunction"].environment["QUEUE_URL"] == f"{EDGE}/123456789012/{work}"
    aws = template.load(ROOT, "longrun-local", "us-east-1", template_file=FIXTURE)
    assert aws.ref("WorkQueue") == f"https://sqs.us-east-1.amazonaws.com/123456789012/{work}"


def test_a_tables_stream_and_time_to_live_are_deployed() -> None:
    (table,) = stack().tables()
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert stack().time_to_live() == [("longrun-local-RecordsTable", {"AttributeName": "expiresAt", "Enabled": True})]


def test_sams_managed_policy_for_a_stream_event_is_on_the_functions_role() -> None:
    role = stack().roles["StreamRecorderFunctionRole"]
    assert "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole" in role.policies


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 10_001}, "BatchSize must be between 1 and 10000"),
        ({"batching_window_seconds": 301}, "MaximumBatchingWindowInSeconds must be between 0 and 300"),
        ({"starting_position": "AT_TIMESTAMP"}, "StartingPosition must be TRIM_HORIZON or LATEST"),
        ({"maximum_retry_attempts": 10_001}, "MaximumRetryAttempts must be between -1 and 10000"),
        ({"function_response_types": ("ReportAll",)}, r"FunctionResponseTypes \['ReportAll'\] are not valid"),
        ({"filter_patterns": ("{}",) * 6}, "at most 5 filters"),
        ({"filter_patterns": ('{"eventName": "INSERT"}',)}, "Invalid filter pattern definition"),
        ({"filter_patterns": ("{not json",)}, "Invalid filter pattern definition"),
    ],
)
def test_a_stream_mapping_lambda_would_refuse_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidMapping, match=message):
        validated_filters(dataclasses.replace(mapping("StreamRecorderFunctionChanges"), **change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 11}, "Maximum batch window in seconds must be greater than 0"),
        ({"starting_position": "LATEST"}, "Unsupported StartingPosition for an Amazon SQS event source"),
        ({"bisect_on_function_error": True}, "Unsupported BisectBatchOnFunctionError"),
        ({"maximum_retry_attempts": 3}, "Unsupported MaximumRetryAttempts"),
    ],
)
def test_a_queue_mapping_lambda_would_refuse_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidMapping, match=message):
        validated_filters(dataclasses.replace(mapping("QueueRecorderFunctionWork"), **change))


def test_a_queue_mapping_gathers_more_than_ten_messages_only_within_a_batching_window() -> None:
    queue = mapping("QueueRecorderFunctionWork")
    assert validated_filters(dataclasses.replace(queue, batch_size=100, batching_window_seconds=1)) == []


def test_a_mapping_property_the_runtime_does_not_play_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    text = FIXTURE.read_text().replace(
        "            MaximumRetryAttempts: 2\n",
        "            MaximumRetryAttempts: 2\n            MaximumRecordAgeInSeconds: 60\n",
    )
    (tmp_path / "template.yaml").write_text(text)
    with pytest.raises(ValueError, match="does not play MaximumRecordAgeInSeconds of StreamRecorderFunctionChanges"):
        template.load(ROOT, "longrun-local", "us-east-1", template_file=tmp_path / "template.yaml")
