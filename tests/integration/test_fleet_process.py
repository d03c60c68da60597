"""The fleet in its own process, as the edge uses it: actions answered, refusals raised as the fleet raises them, its
events passed back, its own failures told apart from SSM's refusals, and close ending it."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from local_runtime.fleet import EventFaults, FleetError, node_id_for
from local_runtime.fleet_process import FleetProcess
from local_runtime.identities import Credentials


@pytest.fixture
def fleet() -> Iterator[tuple[FleetProcess, queue.SimpleQueue[dict[str, Any]]]]:
    events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    process = FleetProcess(
        events.put,
        device_ids=["web-1", "web-2"],
        tag_key="DeviceId",
        region="us-east-1",
        s3_endpoint="http://127.0.0.1:9",  # nothing listens: the devices' downloads fail
        credentials=Credentials("AKIADEVICE", "secret", "token"),
        unmanaged=[],
        unresponsive=[],
        faults=EventFaults(),
    )
    yield process, events
    process.close()


def test_actions_are_answered_and_refusals_raised_as_the_fleet_raises_them(
    fleet: tuple[FleetProcess, queue.SimpleQueue[dict[str, Any]]],
) -> None:
    process, _ = fleet
    nodes = process.handle("DescribeInstanceInformation", {})["InstanceInformationList"]
    assert sorted(n["InstanceId"] for n in nodes) == sorted(node_id_for(d) for d in ("web-1", "web-2"))
    with pytest.raises(FleetError) as refused:
        process.handle("SendCommand", {"InstanceIds": ["mi-0123456789abcdef0"], "DocumentName": "AWS-RunRemoteScript"})
    assert refused.value.code == "InvalidInstanceId" and refused.value.message


def test_a_failure_of_the_fleet_itself_is_not_an_ssm_refusal(
    fleet: tuple[FleetProcess, queue.SimpleQueue[dict[str, Any]]],
) -> None:
    process, _ = fleet
    with pytest.raises(RuntimeError, match="NoSuchAction"):
        process.handle("NoSuchAction", {})
    assert process.handle("DescribeInstanceInformation", {})["InstanceInformationList"]  # and it goes on


def test_ssm_events_come_back_and_close_ends_the_process(
    fleet: tuple[FleetProcess, queue.SimpleQueue[dict[str, Any]]],
) -> None:
    process, events = fleet
    node = node_id_for("web-1")
    sent = process.handle(
        "SendCommand",
        {
            "InstanceIds": [node],
            "DocumentName": "AWS-RunRemoteScript",
            "Parameters": {
                "sourceType": ["S3"],
                "sourceInfo": [json.dumps({"path": "https://s3.us-east-1.amazonaws.com/bucket/hello.sh"})],
                "commandLine": ["./hello.sh"],
            },
        },
    )["Command"]
    seen = []
    deadline = time.monotonic() + 60
    while not any(e["detail"].get("status") == "Failed" and "instance-id" in e["detail"] for e in seen):
        seen.append(events.get(timeout=max(0.1, deadline - time.monotonic())))
    assert {e["detail"]["command-id"] for e in seen} == {sent["CommandId"]}
    assert [e["detail"]["status"] for e in seen if "instance-id" in e["detail"]] == ["InProgress", "Failed"]
    process.close()
    assert process._process.poll() is not None
