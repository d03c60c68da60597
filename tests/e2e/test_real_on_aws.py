"""What a real deployment would have got wrong where moto was lenient, caught here because the local runtime refuses
what AWS refuses (issue "Real on AWS"). Each test names the defect it guards against."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import BUCKET, RESOURCE, LocalRuntimeProcess, Service

pytestmark = pytest.mark.e2e


def test_device_outcomes_are_read_from_the_script_step(service: Service) -> None:
    """Defect 1: AWS-RunRemoteScript has three steps, so SSM answers GetCommandInvocation without PluginName with
    InvalidPluginName; both event paths must read the runShellScript step."""
    task = service.submit(**{"device-ids": ["web-1", "db-1"], "script-url": "scripts/fail-on-db.sh"})
    done = service.wait(task["id"], timeout=30)
    assert done["status"] == "COMPLETE"
    devices = service.devices(task["id"])
    assert (devices["web-1"]["status"], devices["web-1"]["exitCode"]) == ("SUCCESS", 0)
    assert (devices["db-1"]["status"], devices["db-1"]["exitCode"]) == ("FAILED", 3)


def test_a_tagged_instance_that_is_not_a_managed_node_fails_only_its_device(service: Service) -> None:
    """Defect 3: lab-9 is an EC2 instance tagged as a device whose SSM Agent is not registered. SendCommand would
    refuse the whole command (InvalidInstanceId); the device must end FAILED with the reason, the others run."""
    task = service.submit(**{"device-ids": ["web-1", "lab-9", "web-2"], "script-url": "scripts/hello.sh"})
    done = service.wait(task["id"], timeout=30)
    assert done["status"] == "COMPLETE", done
    assert (done["deviceCounts"]["SUCCESS"], done["deviceCounts"]["FAILED"]) == (2, 1)
    lab = service.devices(task["id"])["lab-9"]
    assert lab["status"] == "FAILED"
    assert lab["reason"].endswith("is not an SSM managed node: its SSM Agent is not running or not registered")


def test_the_result_shows_devices_whose_stderr_was_empty(service: Service) -> None:
    """Defect 4: SSM writes no object for an empty stream, and S3 answers a missing key 403 to a reader that may not
    list the bucket: the result page failed for every device that wrote nothing to stderr."""
    task = service.submit(**{"device-ids": ["web-1"], "script-url": "scripts/hello.sh"})
    service.wait(task["id"], timeout=30)
    reply = service.request("GET", f"{RESOURCE}/{task['id']}/result")
    assert reply.status == 200, reply.body
    device = reply.body["devices"][0]
    assert device["stderr"] == {"head": "", "truncated": False}  # no location: there is no such object
    assert device["stdout"]["head"].startswith("hello from web-1")


def test_each_devices_output_reaches_the_encrypted_bucket(service: Service) -> None:
    """Defect 5: the SSM agent reads an encrypted output bucket's encryption before it uploads; without
    s3:GetEncryptionConfiguration in DeviceAccessPolicy no device's output would ever reach the bucket."""
    task = service.submit(**{"device-ids": ["web-2", "web-3"], "script-url": "scripts/hello.sh"})
    service.wait(task["id"], timeout=30)
    s3 = service.aws("s3")
    assert "SSEAlgorithm" in str(s3.get_bucket_encryption(Bucket=BUCKET))
    for device in service.devices(task["id"]).values():
        bucket, _, key = device["stdout"]["location"].removeprefix("s3://").partition("/")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read().startswith(b"hello from")


def test_links_resolve_on_the_stage_url_the_client_used(service: Service) -> None:
    """Defect 6: on the execute-api URL every path is under the stage (/v1); links without it answer 403."""
    reply = service.request("POST", RESOURCE, {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"})
    location = reply.headers["Location"]
    assert location.startswith(f"{service.base_path}/") and location == reply.body["href"]
    assert service.request("GET", location).status == 200
    done = service.wait(reply.body["id"])
    assert service.request("GET", done["result"]["href"]).status == 200
    listed = service.request("GET", f"{RESOURCE}?limit=1").body["items"][0]
    assert service.request("GET", listed["href"]).status == 200
    unstaged = service.request("GET", service.origin + location.removeprefix(service.base_path))
    assert (unstaged.status, unstaged.body) == (403, {"message": "Forbidden"})  # where the links used to point


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("DELETE", "/device-management"),  # a resource with no method (a method another one lacks: 405, see
        ("PUT", "/device-management/script-execution/x/nope"),  # test_http_problems.py)
    ],
)
def test_errors_api_gateway_answers_itself_are_valid_problems(service: Service, method: str, path: str) -> None:
    """Defect 7: DEFAULT_4XX wrote the response type where the status belongs, so API Gateway's own errors were
    invalid JSON; each type now has its response, with its status."""
    reply = service.request(method, path, {} if method in ("PUT", "POST") else None)
    assert reply.status == 403
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.body == {
        "type": "about:blank",
        "title": "Missing Authentication Token",
        "status": 403,
        "instance": f"{service.base_path}{path}",
    }


def test_a_batch_whose_reports_never_came_asks_ssm_how_its_devices_ended() -> None:
    """Defect 8: SSM's events are delivered at best effort. When a batch's wait runs out, its silent devices must be
    recorded as SSM says they ended, not TIMED_OUT unasked."""
    runtime = LocalRuntimeProcess.start(
        "--drop-events", "invocation", "--drop-events", "command", "--parameter", "ReportGraceSeconds=1",
        "--unresponsive", "web-2",
    )  # fmt: skip
    try:
        service = runtime.service
        ids = ["web-1", "db-1", "web-2"]
        task = service.submit(**{"device-ids": ids, "script-url": "scripts/fail-on-db.sh", "timeout-seconds": 2})
        done = service.wait(task["id"], timeout=40)
        assert done["status"] == "COMPLETE", done
        devices = service.devices(task["id"])
        assert (devices["web-1"]["status"], devices["web-1"]["stdout"]["head"]) == ("SUCCESS", "patched web-1\n")
        assert (devices["db-1"]["status"], devices["db-1"]["exitCode"]) == ("FAILED", 3)
        # web-2's agent went silent mid-run: SSM still lists it in progress, so it is stopped and timed out
        assert devices["web-2"]["status"] == "TIMED_OUT"
        assert devices["web-2"]["reason"] == "SSM did not report the script's end in time; its run was cancelled"
    finally:
        runtime.stop()


def test_a_script_whose_name_holds_spaces_and_quotes_is_refused_at_submit(service: Service) -> None:
    """Defect 11: the script's name went unquoted into the command line that sh runs. A script key now holds only
    A-Z a-z 0-9 . _ - /, so such a name is refused at submit rather than run (or failed later)."""
    key = "scripts/it's a test; echo injected.sh"
    service.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=b'#!/bin/sh\necho "quoted $DEVICE_ID"\n')
    reply = service.request("POST", RESOURCE, {"device-ids": ["web-1"], "script-url": key})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "body.script-url"


def test_a_device_may_not_run_longer_than_the_document_allows(service: Service) -> None:
    """Defect 13: AWS-RunRemoteScript's executionTimeout allows at most 28,800 seconds: a longer timeout-seconds
    is refused at submit, not by SSM at every batch."""
    reply = service.request("POST", RESOURCE, {"device-ids": ["web-1"], "script-url": "scripts/hello.sh",
                                               "timeout-seconds": 28_801})  # fmt: skip
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "body.timeout-seconds"
    task = service.submit(**{"timeout-seconds": 28_800})
    assert service.wait(task["id"], timeout=30)["status"] == "COMPLETE"


def test_a_script_that_cannot_be_downloaded_fails_its_device_with_the_reason(service: Service, tmp_path: Path) -> None:
    """Defect 14: when AWS-RunRemoteScript's downloadContent step fails, the device failed for that reason, not
    because of what the shell said about a missing file."""
    key = "scripts/vanishing.sh"
    started = tmp_path / "web-1-started"  # the script touches it, so web-1 has downloaded it by then
    s3 = service.aws("s3")
    s3.put_object(Bucket=BUCKET, Key=key, Body=f"#!/bin/sh\ntouch '{started}'\nsleep 2\necho ran\n".encode())
    task = service.submit(**{"device-ids": ["web-1", "web-2"], "script-url": key, "max-concurrency": 1})
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline, "web-1 did not start its script"
        time.sleep(0.05)
    s3.delete_object(Bucket=BUCKET, Key=key)  # gone before web-2's turn
    done = service.wait(task["id"], timeout=30)
    devices = service.devices(task["id"])
    assert devices["web-1"]["status"] == "SUCCESS"
    assert devices["web-2"]["status"] == "FAILED"
    assert devices["web-2"]["reason"].startswith("the script could not be downloaded: ")
    assert "exitCode" not in devices["web-2"]
    assert done["deviceCounts"]["FAILED"] == 1


SIMULTANEOUS_END = """#!/bin/sh
# Every device sleeps until the same second, so all of them end (and report) together.
now=$(date +%s)
if [ "$now" -lt {target} ]; then sleep $(({target} - now)); fi
echo "done $DEVICE_ID"
"""


def test_three_hundred_devices_ending_together_are_each_recorded_once() -> None:
    """Defect 2: DynamoDB cancels concurrent transactions on one item (TransactionConflict) and the SDK does not
    retry them; every device's outcome updates the task's counts. 300 devices end within about a second under the
    local transaction rules (each transaction holds its items 10 ms, and a fifth of writes are refused anyway)."""
    runtime = LocalRuntimeProcess.start("--fleet-size", "300", "--transaction-conflict-rate", "0.2")
    try:
        service = runtime.service
        key = "scripts/simultaneous-end.sh"
        target = int(time.time()) + 20
        service.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=SIMULTANEOUS_END.format(target=target).encode())
        ids = [f"device-{n}" for n in range(1, 301)]
        task = service.submit(**{"device-ids": ids, "script-url": key, "max-concurrency": 300})
        done = service.wait(task["id"], timeout=120)
        assert done["status"] == "COMPLETE", done
        assert done["deviceCounts"]["SUCCESS"] == 300 and sum(done["deviceCounts"].values()) == 300
        devices = service.devices(task["id"])
        assert sorted(devices) == sorted(ids) and {d["status"] for d in devices.values()} == {"SUCCESS"}
        ends = sorted(datetime.fromisoformat(d["endedAt"]) for d in devices.values())
        # All at once, not one after another: how close depends on how fast this machine runs 300 processes (2.7 s
        # on a busy CI run); what the test needs is that their transactions met, which the meter counts.
        assert (ends[-1] - ends[0]).total_seconds() < 10
        assert service.local("meter")["dynamodb"]["transactionConflicts"] > 0  # they did conflict, and were retried
    finally:
        runtime.stop()


def test_a_missing_script_is_refused_403_to_the_workflow_and_fails_the_task(service: Service) -> None:
    """Defect 12: StartRun may read scripts/ only (no ListBucket), so S3 answers a missing script 403, not 404."""
    with pytest.raises(ClientError) as refused:
        service.aws("s3").head_object(Bucket=BUCKET, Key="scripts/not-there.sh")
    assert refused.value.response["Error"]["Code"] == "404"  # the administrator may list the bucket
    task = service.submit(**{"script-url": "scripts/not-there.sh"})
    done = service.wait(task["id"])
    assert done["status"] == "FAILED" and "not-there.sh does not exist" in done["statusReason"]
