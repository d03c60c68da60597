from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from posixpath import basename
from typing import Any

import pytest

from longrun import run_command
from longrun.records import DeviceStatus


def test_comment_round_trip() -> None:
    task_id = "1a8afbb7-3b76-41fc-9ab8-5b2cd6b41367"
    assert run_command.parse_comment(run_command.batch_comment(task_id, 17)) == (task_id, 17)
    assert len(run_command.batch_comment(task_id, 99_999)) <= 100  # SSM's limit on Comment


@pytest.mark.parametrize("comment", ["", "patch tuesday", "longrun not-a-task batch 1", "longrun x batch y"])
def test_foreign_comments_are_not_ours(comment: str) -> None:
    assert run_command.parse_comment(comment) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://s3.us-east-1.amazonaws.com/bucket/output/a/stdout", "s3://bucket/output/a/stdout"),
        ("https://s3.amazonaws.com/bucket/k", "s3://bucket/k"),
        ("https://bucket.s3.eu-west-1.amazonaws.com/k/stdout", "s3://bucket/k/stdout"),
        ("", None),
    ],
)
def test_output_urls_become_s3_urls(url: str, expected: str | None) -> None:
    assert run_command._s3_url(url) == expected


def test_reasons() -> None:
    assert run_command._reason(DeviceStatus.SUCCESS, "Success", 0) is None
    assert run_command._reason(DeviceStatus.FAILED, "Failed", 3) == "the script exited with code 3"
    assert "time limit" in (run_command._reason(DeviceStatus.TIMED_OUT, "ExecutionTimedOut", None) or "")
    assert "never started" in (run_command._reason(DeviceStatus.NOT_STARTED, "DeliveryTimedOut", None) or "")
    assert run_command._reason(DeviceStatus.FAILED, "Undeliverable", None) == "SSM reported Undeliverable"


@pytest.mark.parametrize(
    ("device_id", "is_node"),
    [("mi-0123456789abcdef0", True), ("i-0123456789abcdef0", True), ("web-1", False), ("mi-xyz", False)],
)
def test_node_ids_are_recognised(device_id: str, is_node: bool) -> None:
    assert bool(run_command.NODE_ID.match(device_id)) is is_node


def test_the_script_name_is_quoted_for_sh(tmp_path: Path) -> None:
    key = "scripts/it's a $(touch pwned) `touch pwned2`; reboot.sh"
    (tmp_path / basename(key)).write_text("#!/bin/sh\necho ran\n")
    ran = subprocess.run(["/bin/sh", "-c", run_command.command_line(key)], cwd=tmp_path, capture_output=True, text=True)
    assert (ran.returncode, ran.stdout) == (0, "ran\n"), ran.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [basename(key)]


STARTED = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def invocation(status: str, **steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "CommandId": "c",
        "InstanceId": "mi-0123456789abcdef0",
        "Comment": "longrun x batch 0",
        "Status": status,
        "StatusDetails": status,
        "CommandPlugins": [{"Name": name, **fields} for name, fields in steps.items()],
    }


def test_a_run_is_read_from_the_script_step() -> None:
    run = {
        "Status": "Failed",
        "ResponseCode": 3,
        "ResponseStartDateTime": STARTED,
        "ResponseFinishDateTime": STARTED,
        "StandardOutputUrl": "https://s3.us-east-1.amazonaws.com/b/output/t/c/mi/awsrunShellScript/runShellScript/stdout",
    }
    found = run_command.outcome_of(invocation("Failed", downloadContent={"Status": "Success"}, runShellScript=run))
    assert found is not None
    assert (found.status, found.exit_code, found.reason) == (DeviceStatus.FAILED, 3, "the script exited with code 3")
    assert found.stdout_url == "s3://b/output/t/c/mi/awsrunShellScript/runShellScript/stdout"


def test_a_failed_download_is_the_reason_the_device_failed() -> None:
    download = {"Status": "Failed", "Output": "\nfailed to download s3://b/scripts/a.sh: AccessDenied\n"}
    run = {"Status": "Failed", "ResponseCode": 127, "ResponseStartDateTime": STARTED}
    found = run_command.outcome_of(invocation("Failed", downloadContent=download, runShellScript=run))
    assert found is not None and found.status is DeviceStatus.FAILED and found.exit_code is None
    assert found.reason == "the script could not be downloaded: failed to download s3://b/scripts/a.sh: AccessDenied"


def test_a_run_still_going_has_no_outcome_yet() -> None:
    assert run_command.outcome_of(invocation("InProgress", runShellScript={"Status": "InProgress"})) is None


def test_a_run_cancelled_before_it_began_never_started() -> None:
    found = run_command.outcome_of(invocation("Cancelled", runShellScript={"Status": "Cancelled", "ResponseCode": -1}))
    assert found is not None and found.status is DeviceStatus.NOT_STARTED and found.exit_code is None


def test_a_step_that_never_ran_takes_the_invocations_status() -> None:
    """A command that timed out before delivery leaves its steps Pending: the device never started."""
    found = run_command.outcome_of(invocation("TimedOut", runShellScript={"Status": "Pending", "ResponseCode": -1}))
    assert found is not None and found.status is DeviceStatus.NOT_STARTED


def test_ssm_s_refusal_names_the_nodes_it_refused() -> None:
    refused = run_command.NodesNotManaged(
        "An error occurred (InvalidInstanceId) when calling the SendCommand operation: "
        "Instances [[i-0123456789abcdef0, mi-0123456789abcdef1]] not in a valid state for account 123456789012"
    )
    assert refused.named == {"i-0123456789abcdef0", "mi-0123456789abcdef1"}


COMMAND = "0b8afbb7-3b76-41fc-9ab8-5b2cd6b41367"


def cid(letter: str) -> str:
    return f"{letter * 8}-3b76-41fc-9ab8-5b2cd6b41367"


def stubbed_ssm(monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("ssm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(run_command, "_ssm", lambda: client)
    stubber = Stubber(client)
    stubber.activate()
    return stubber


def test_the_nodes_ssm_holds_back_are_its_pending_and_delayed_invocations(monkeypatch: pytest.MonkeyPatch) -> None:
    ssm = stubbed_ssm(monkeypatch)
    listed = [
        {"InstanceId": "mi-0000000000000000a", "Status": "InProgress"},
        {"InstanceId": "mi-0000000000000000b", "Status": "Pending"},
        {"InstanceId": "mi-0000000000000000c", "Status": "Delayed"},
        {"InstanceId": "mi-0000000000000000d", "Status": "Success"},
    ]
    ssm.add_response(
        "list_command_invocations", {"CommandInvocations": listed}, {"CommandId": COMMAND, "MaxResults": 50}
    )
    assert run_command.waiting_nodes(COMMAND) == {"mi-0000000000000000b", "mi-0000000000000000c"}


def test_a_task_s_commands_still_going_are_found_by_their_comment(monkeypatch: pytest.MonkeyPatch) -> None:
    ssm = stubbed_ssm(monkeypatch)
    task = "1a8afbb7-3b76-41fc-9ab8-5b2cd6b41367"
    other = "2b8afbb7-3b76-41fc-9ab8-5b2cd6b41367"
    commands = [
        {"CommandId": cid("a"), "Comment": run_command.batch_comment(task, 0), "Status": "InProgress"},
        {"CommandId": cid("b"), "Comment": run_command.batch_comment(task, 1), "Status": "Success"},
        {"CommandId": cid("c"), "Comment": run_command.batch_comment(task, 2), "Status": "Pending"},
        {"CommandId": cid("d"), "Comment": run_command.batch_comment(other, 0), "Status": "InProgress"},
        {"CommandId": cid("e"), "Comment": "patch tuesday", "Status": "InProgress"},
    ]
    filters = [
        {"key": "DocumentName", "value": "AWS-RunRemoteScript"},
        {"key": "InvokedAfter", "value": "2026-11-27T09:59:00Z"},
    ]
    ssm.add_response("list_commands", {"Commands": commands}, {"Filters": filters})
    assert run_command.commands_going(task, datetime(2026, 11, 27, 10, 0, tzinfo=UTC)) == [cid("a"), cid("c")]
