"""The local fleet's rate control inside one command, as SSM documents SendCommand's MaxConcurrency and MaxErrors:
at most MaxConcurrency nodes run at once (a number, or a percentage of the command's nodes) and the next starts as
soon as one ends; once more than MaxErrors invocations have failed or timed out, SSM sends the command to no further
node: those invocations end Cancelled without running, each with its event, and the command ends Failed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import boto3
import pytest

from local_runtime.fleet import Fleet, node_id_for
from local_runtime.identities import Credentials

BUCKET = "fleet-rate-test"
DEVICES = [f"dev-{n}" for n in range(1, 7)]


@pytest.fixture
def fleet(aws: None, tmp_path: Path) -> Iterator[tuple[Fleet, list[dict[str, Any]], Path]]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    # each device notes when its script started and ended; dev-1 is the straggler, dev-6 fails
    script = (
        "#!/bin/sh\n"
        f"echo $(date +%s.%N) > {tmp_path}/$DEVICE_ID.start\n"
        'case "$DEVICE_ID" in dev-1) sleep 3 ;; *) sleep 0.3 ;; esac\n'
        f"echo $(date +%s.%N) > {tmp_path}/$DEVICE_ID.end\n"
        'case "$DEVICE_ID" in dev-6|bad-*) exit 3 ;; esac\n'
    )
    s3.put_object(Bucket=BUCKET, Key="scripts/timed.sh", Body=script.encode())
    events: list[dict[str, Any]] = []
    local = Fleet(
        device_ids=DEVICES,
        tag_key="DeviceId",
        region="us-east-1",
        s3_endpoint="https://s3.us-east-1.amazonaws.com",
        credentials=Credentials("AKIADEVICE", "secret", "token"),
        announce=events.append,
    )
    yield local, events, tmp_path
    local.close()


def send(fleet: Fleet, devices: list[str], concurrency: str, errors: str = "100%") -> str:
    body = {
        "InstanceIds": [node_id_for(d) for d in devices],
        "DocumentName": "AWS-RunRemoteScript",
        "Parameters": {
            "sourceType": ["S3"],
            "sourceInfo": [json.dumps({"path": f"https://s3.us-east-1.amazonaws.com/{BUCKET}/scripts/timed.sh"})],
            "commandLine": ["chmod +x ./timed.sh && ./timed.sh"],
        },
        "MaxConcurrency": concurrency,
        "MaxErrors": errors,
    }
    return str(fleet.handle("SendCommand", body)["Command"]["CommandId"])


def wait(fleet: Fleet, command_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        command: dict[str, Any] = fleet.handle("ListCommands", {"CommandId": command_id})["Commands"][0]
        if command["Status"] not in ("Pending", "InProgress"):
            time.sleep(0.2)  # the last events follow the status
            return command
        assert time.monotonic() < deadline
        time.sleep(0.05)


def spans(directory: Path) -> dict[str, tuple[float, float]]:
    return {
        path.stem: (float(path.read_text()), float(path.with_suffix(".end").read_text()))
        for path in directory.glob("*.start")
    }


def most_at_once(runs: dict[str, tuple[float, float]]) -> int:
    moments = sorted([(start, 1) for start, _ in runs.values()] + [(end, -1) for _, end in runs.values()])
    running = peak = 0
    for _, step in moments:  # an end before a start at the same moment
        running += step
        peak = max(peak, running)
    return peak


def test_max_concurrency_rolls_a_new_node_in_as_soon_as_one_ends(fleet: tuple[Fleet, list[Any], Path]) -> None:
    local, _, directory = fleet
    command = wait(local, send(local, DEVICES[:5], "2"))
    assert command["Status"] == "Success" and command["MaxConcurrency"] == "2"
    runs = spans(directory)
    assert set(runs) == set(DEVICES[:5])
    assert most_at_once(runs) == 2
    straggler_start, straggler_end = runs["dev-1"]
    # dev-2..dev-5 ran one after another beside the straggler, each started while it still ran
    assert all(runs[d][0] < straggler_end for d in DEVICES[1:5])
    assert all(straggler_start < runs[d][0] for d in DEVICES[2:5])
    assert all(not (a[0] < b[1] and b[0] < a[1]) for a, b in combinations([runs[d] for d in DEVICES[1:5]], 2))


def test_max_concurrency_as_a_percentage_of_the_command_s_nodes(fleet: tuple[Fleet, list[Any], Path]) -> None:
    local, _, directory = fleet
    wait(local, send(local, DEVICES[1:5], "50%"))
    assert most_at_once(spans(directory)) == 2


def test_past_max_errors_the_rest_are_cancelled_unstarted_and_the_command_fails(
    fleet: tuple[Fleet, list[dict[str, Any]], Path],
) -> None:
    local, events, directory = fleet
    order = ["dev-6", "dev-2", "dev-3", "dev-4"]  # one at a time: dev-6 fails first, one error allowed
    command_id = send(local, order, "1", errors="0")
    command = wait(local, command_id)
    assert (command["Status"], command["ErrorCount"], command["CompletedCount"]) == ("Failed", 1, 4)
    assert set(spans(directory)) == {"dev-6"}  # no other script ran
    listed = local.handle("ListCommandInvocations", {"CommandId": command_id, "Details": True})
    by_node = {i["InstanceId"]: i for i in listed["CommandInvocations"]}
    assert by_node[node_id_for("dev-6")]["Status"] == "Failed"
    for device in order[1:]:
        invocation = by_node[node_id_for(device)]
        assert (invocation["Status"], invocation["StatusDetails"]) == ("Cancelled", "Cancelled")
        assert all("ResponseStartDateTime" not in p for p in invocation["CommandPlugins"])  # never started
    ended = [
        e["detail"]["status"]
        for e in events
        if e["detail-type"] == "EC2 Command Invocation Status-change Notification"
        and e["detail"]["instance-id"] != node_id_for("dev-6")
    ]
    assert ended == ["Cancelled"] * 3  # an event for each, never InProgress
    finals = [e["detail"]["status"] for e in events if e["detail-type"] == "EC2 Command Status-change Notification"]
    assert finals[-1] == "Failed"


def test_max_errors_counts_failures_beyond_the_threshold(fleet: tuple[Fleet, list[Any], Path]) -> None:
    local, _, directory = fleet
    command = wait(local, send(local, ["dev-6", "dev-2", "dev-3"], "1", errors="1"))
    assert command["Status"] == "Failed" and set(spans(directory)) == {"dev-6", "dev-2", "dev-3"}  # 1 error allowed
