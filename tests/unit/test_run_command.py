from __future__ import annotations

import pytest

from longrun import run_command
from longrun.models import DeviceStatus


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
