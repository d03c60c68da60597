"""The local fleet against SSM's documentation: what SendCommand refuses, AWS-RunRemoteScript's steps and their
output keys, GetCommandInvocation's PluginName, SSM's two EventBridge events, and fault injection on them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from local_runtime.fleet import EventFaults, Fleet, FleetError, instance_id_for, node_id_for
from local_runtime.identities import Credentials

BUCKET = "fleet-test"
SCRIPT = '#!/bin/sh\necho "hello $DEVICE_ID"\n'


@pytest.fixture
def fleet(aws: None) -> Iterator[tuple[Fleet, list[dict[str, Any]]]]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_object(Bucket=BUCKET, Key="scripts/hello.sh", Body=SCRIPT.encode())
    events: list[dict[str, Any]] = []
    local = Fleet(
        device_ids=["web-1", "ec2:web-2"],
        tag_key="DeviceId",
        region="us-east-1",
        s3_endpoint="https://s3.us-east-1.amazonaws.com",
        credentials=Credentials("AKIADEVICE", "secret", "token"),
        announce=events.append,
        unmanaged=["lab-9"],
    )
    yield local, events
    local.close()


def send(fleet: Fleet, nodes: list[str], key: str = "scripts/hello.sh", **parameters: list[str]) -> dict[str, Any]:
    body = {
        "InstanceIds": nodes,
        "DocumentName": "AWS-RunRemoteScript",
        "Comment": "test",
        "Parameters": {
            "sourceType": ["S3"],
            "sourceInfo": [json.dumps({"path": f"https://s3.us-east-1.amazonaws.com/{BUCKET}/{key}"})],
            "commandLine": ["chmod +x ./hello.sh && ./hello.sh"],
            **parameters,
        },
        "OutputS3BucketName": BUCKET,
        "OutputS3KeyPrefix": "output/t",
    }
    return fleet.handle("SendCommand", body)["Command"]


def wait(fleet: Fleet, command_id: str) -> None:
    deadline = time.monotonic() + 20
    while fleet.handle("ListCommands", {"CommandId": command_id})["Commands"][0]["Status"] in ("Pending", "InProgress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # the last events and uploads follow the status


def test_a_multi_step_document_is_read_step_by_step(fleet: tuple[Fleet, list[dict[str, Any]]]) -> None:
    local, _ = fleet
    node = node_id_for("web-1")
    command = send(local, [node])
    wait(local, command["CommandId"])
    ask = {"CommandId": command["CommandId"], "InstanceId": node}
    with pytest.raises(FleetError) as missing:
        local.handle("GetCommandInvocation", ask)
    assert missing.value.code == "InvalidPluginName"
    run = local.handle("GetCommandInvocation", {**ask, "PluginName": "runShellScript"})
    assert (run["Status"], run["ResponseCode"], run["StandardOutputContent"]) == ("Success", 0, "hello web-1\n")
    assert run["StandardOutputUrl"].endswith(
        f"output/t/{command['CommandId']}/{node}/awsrunShellScript/runShellScript/stdout"
    )
    skipped = local.handle("GetCommandInvocation", {**ask, "PluginName": "runPowerShellScript"})
    assert skipped["Status"] == "Success" and "Step execution skipped" in skipped["StandardOutputContent"]
    listed = local.handle("ListCommandInvocations", {"CommandId": command["CommandId"], "Details": True})
    steps = {p["Name"]: p["Status"] for p in listed["CommandInvocations"][0]["CommandPlugins"]}
    assert steps == {"downloadContent": "Success", "runPowerShellScript": "Success", "runShellScript": "Success"}


def test_only_non_empty_streams_are_written_each_under_its_step(fleet: tuple[Fleet, list[dict[str, Any]]]) -> None:
    local, _ = fleet
    node = instance_id_for("web-2")
    command = send(local, [node])
    wait(local, command["CommandId"])
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="output/")["Contents"]}
    prefix = f"output/t/{command['CommandId']}/{node}"
    assert keys == {
        f"{prefix}/awsrunShellScript/runShellScript/stdout",
        f"{prefix}/awsdownloadContent/downloadContent/stdout",
    }


def test_a_failed_download_fails_its_step_and_the_invocation(fleet: tuple[Fleet, list[dict[str, Any]]]) -> None:
    local, _ = fleet
    node = node_id_for("web-1")
    command = send(local, [node], key="scripts/missing.sh")
    wait(local, command["CommandId"])
    listed = local.handle("ListCommandInvocations", {"CommandId": command["CommandId"], "Details": True})
    invocation = listed["CommandInvocations"][0]
    steps = {p["Name"]: p for p in invocation["CommandPlugins"]}
    assert invocation["Status"] == "Failed"
    assert steps["downloadContent"]["Status"] == "Failed" and "missing.sh" in steps["downloadContent"]["Output"]
    assert steps["runShellScript"]["Status"] == "Failed"  # the document has no onFailure: the next step still runs


def test_a_script_past_its_execution_timeout_is_killed_and_timed_out(
    fleet: tuple[Fleet, list[dict[str, Any]]],
) -> None:
    local, _ = fleet
    node = node_id_for("web-1")
    boto3.client("s3").put_object(Bucket=BUCKET, Key="scripts/slow.sh", Body=b"#!/bin/sh\necho begun\nsleep 30\n")
    started = time.monotonic()
    command = send(local, [node], key="scripts/slow.sh", commandLine=["sh ./slow.sh"], executionTimeout=["1"])
    wait(local, command["CommandId"])
    assert time.monotonic() - started < 10  # killed at its limit, not left to sleep its 30 s
    run = local.handle(
        "GetCommandInvocation", {"CommandId": command["CommandId"], "InstanceId": node, "PluginName": "runShellScript"}
    )
    assert (run["Status"], run["StatusDetails"], run["StandardOutputContent"]) == (
        "TimedOut",
        "ExecutionTimedOut",
        "begun\n",
    )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"InstanceIds": [instance_id_for("lab-9")]}, "InvalidInstanceId"),  # tagged EC2 instance, not a managed node
        ({"InstanceIds": ["i-0123456789abcdef0"]}, "InvalidInstanceId"),
        ({"InstanceIds": ["web-1"]}, "ValidationException"),
        ({"DocumentName": "AWS-RunShellScript"}, "InvalidDocument"),
        ({"Comment": "c" * 101}, "ValidationException"),
        ({"TimeoutSeconds": 29}, "ValidationException"),
        ({"MaxConcurrency": "0"}, "ValidationException"),
        ({"MaxErrors": "101%"}, "ValidationException"),
        ({"Parameters": {"executionTimeout": ["28801"]}}, "InvalidParameters"),
        ({"Parameters": {"executionTimeout": ["0"]}}, "InvalidParameters"),
        ({"Parameters": {"sourceType": ["FTP"]}}, "InvalidParameters"),
        ({"Parameters": {"commands": ["ls"]}}, "InvalidParameters"),
    ],
)
def test_send_command_refuses_what_ssm_refuses(
    fleet: tuple[Fleet, list[dict[str, Any]]], change: dict[str, Any], code: str
) -> None:
    local, _ = fleet
    body: dict[str, Any] = {
        "InstanceIds": [node_id_for("web-1")],
        "DocumentName": "AWS-RunRemoteScript",
        "Parameters": {"sourceType": ["S3"], "sourceInfo": ["{}"], "commandLine": ["x"], "executionTimeout": ["28800"]},
    }
    for name, value in change.items():
        body[name] = {**body[name], **value} if name == "Parameters" else value
    with pytest.raises(FleetError) as refused:
        local.handle("SendCommand", body)
    assert refused.value.code == code


def test_ssm_events_have_the_documented_shape(fleet: tuple[Fleet, list[dict[str, Any]]]) -> None:
    local, events = fleet
    node = node_id_for("web-1")
    command = send(local, [node])
    wait(local, command["CommandId"])
    invocation = [e for e in events if e["detail-type"] == "EC2 Command Invocation Status-change Notification"]
    whole = [e for e in events if e["detail-type"] == "EC2 Command Status-change Notification"]
    assert [e["detail"]["status"] for e in invocation] == ["InProgress", "Success"]
    assert set(invocation[-1]["detail"]) == {
        "command-id",
        "document-name",
        "instance-id",
        "requested-date-time",
        "status",
    }
    assert [e["detail"]["status"] for e in whole] == ["InProgress", "Success"]
    assert set(whole[-1]["detail"]) == {
        "command-id", "document-name", "expire-after", "parameters", "requested-date-time", "status"
    }  # fmt: skip
    assert {e["source"] for e in events} == {"aws.ssm"}


def test_events_can_be_dropped_by_kind(aws: None) -> None:
    faults = EventFaults.parse(["invocation"], [])
    assert faults.drop == {"invocation": 1.0}
    assert EventFaults.parse(["command:0.5"], ["invocation:2"]) == EventFaults(
        drop={"command": 0.5}, delay={"invocation": 2.0}
    )
    with pytest.raises(ValueError, match="expected one of"):
        EventFaults.parse(["device"], [])


def test_commands_are_listed_by_document_and_time(fleet: tuple[Fleet, list[dict[str, Any]]]) -> None:
    local, _ = fleet
    before = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    first = send(local, [node_id_for("web-1")])["CommandId"]
    second = send(local, [node_id_for("web-1")])["CommandId"]
    listed = local.handle(
        "ListCommands",
        {
            "Filters": [
                {"key": "DocumentName", "value": "AWS-RunRemoteScript"},
                {"key": "InvokedAfter", "value": before},
            ]
        },
    )
    assert [c["CommandId"] for c in listed["Commands"]] == [second, first]  # newest first
    page = local.handle("ListCommands", {"MaxResults": 1})
    assert len(page["Commands"]) == 1 and page["NextToken"] == "1"
    with pytest.raises(FleetError, match="does not filter"):
        local.handle("ListCommands", {"Filters": [{"key": "Comment", "value": "test"}]})
    for command in (first, second):
        wait(local, command)
