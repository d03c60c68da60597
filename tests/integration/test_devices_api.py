"""The devices routes and script uploads, through the real API handler (events as API Gateway sends them), against
AWS APIs: the task's records as the workflow writes them, the output and scripts in S3."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from longrun.records import Batch, CommandOutcome, DeviceStatus, TaskStatus
from tests.conftest import ROOT, function_module
from tests.integration.conftest import Deployment
from tests.integration.test_api import RESOURCE, STAGE, Context, call
from tests.unit.test_device_states import position

SCRIPTS = "/device-management/scripts"
DEVICES = ["web-1", "web-2", 3, "site/db-1"]


def running_task(deployed: Deployment) -> tuple[str, str]:
    """A task of DEVICES two at a time: web-1 has succeeded (its stdout in S3, no stderr), web-2 is running, 3 and
    site/db-1 wait for the second batch. Answers the task's id and web-1's stdout location."""
    code, _, task = call("POST", RESOURCE, {"device-ids": DEVICES, "script-url": "scripts/a.sh", "max-concurrency": 2})
    assert code == 202, task
    store = deployed.store
    store.change_status(task["id"], TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    batch = Batch(
        task_id=task["id"], number=0, start=0, device_ids=DEVICES[:2], nodes={"mi-1": 0, "mi-2": 1}, task_token="t"
    )
    store.start_batch(batch, failed={})
    store.set_batch_command(task["id"], 0, "cmd", cut_by_deadline=False)
    key = f"output/{task['id']}/cmd/mi-1/awsrunShellScript/runShellScript/stdout"
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key=key, Body=b"hello from web-1\n")
    now = datetime.now(UTC)
    outcome = CommandOutcome(
        command_id="cmd",
        node_id="mi-1",
        comment="",
        status=DeviceStatus.SUCCESS,
        exit_code=0,
        started_at=now - timedelta(seconds=1),
        ended_at=now,
        stdout_url=f"s3://{deployed.bucket}/{key}",
    )
    assert store.finish_device(batch, 0, outcome)
    return task["id"], key


def test_each_devices_current_state_while_the_task_runs(deployed: Deployment) -> None:
    task_id, _ = running_task(deployed)
    href = f"{STAGE}{RESOURCE}/{task_id}/devices"
    code, headers, page = call("GET", f"{RESOURCE}/{task_id}/devices")
    assert (code, headers["Content-Type"]) == (200, "application/json"), page
    assert "next-token" not in page
    web_1, web_2, three, db_1 = page["items"]
    assert web_1["device-id"] == "web-1" and web_1["status"] == "SUCCESS" and web_1["exitCode"] == 0
    assert web_1["startedAt"] < web_1["endedAt"]
    assert (web_1["href"], web_1["stdout"], web_1["stderr"]) == (
        f"{href}/web-1",
        f"{href}/web-1/stdout",
        f"{href}/web-1/stderr",
    )
    assert web_2 == {"device-id": "web-2", "status": "RUNNING", "href": f"{href}/web-2"}
    assert three == {"device-id": 3, "status": "PENDING", "href": f"{href}/3"}
    assert db_1 == {"device-id": "site/db-1", "status": "PENDING", "href": f"{href}/site%2Fdb-1"}
    # each device by the href it was given
    for device in page["items"]:
        code, _, one = call("GET", device["href"].removeprefix(STAGE))
        assert (code, one) == (200, device)


def test_a_batch_whose_command_is_not_sent_yet_runs_none_of_its_devices(deployed: Deployment) -> None:
    """The workflow records a batch when it starts, then sends its command: in between, its devices are PENDING (the
    route says RUNNING only once a device is sent to SSM)."""
    code, _, task = call("POST", RESOURCE, {"device-ids": DEVICES, "script-url": "scripts/a.sh", "max-concurrency": 2})
    assert code == 202, task
    store = deployed.store
    store.change_status(task["id"], TaskStatus.IN_PROGRESS, [TaskStatus.SUBMITTED])
    nodes = {"mi-1": 0, "mi-2": 1}
    store.start_batch(
        Batch(task_id=task["id"], number=0, start=0, device_ids=DEVICES[:2], nodes=nodes, task_token="t"), failed={}
    )
    code, _, page = call("GET", f"{RESOURCE}/{task['id']}/devices")
    assert code == 200, page
    assert [device["status"] for device in page["items"]] == ["PENDING"] * 4
    store.set_batch_command(task["id"], 0, "cmd", cut_by_deadline=False)
    code, _, page = call("GET", f"{RESOURCE}/{task['id']}/devices")
    assert [device["status"] for device in page["items"]] == ["RUNNING", "RUNNING", "PENDING", "PENDING"]


def test_a_status_filter_and_pages(deployed: Deployment) -> None:
    task_id, _ = running_task(deployed)
    path = f"{RESOURCE}/{task_id}/devices"
    code, _, running = call("GET", path, query={"status": "RUNNING"})
    assert code == 200 and [d["device-id"] for d in running["items"]] == ["web-2"] and "next-token" not in running
    code, _, first = call("GET", path, query={"status": "PENDING", "limit": "1"})
    assert [d["device-id"] for d in first["items"]] == [3] and position(first["next-token"]) == "3"
    code, _, second = call("GET", path, query={"status": "PENDING", "limit": "1", "next-token": first["next-token"]})
    assert [d["device-id"] for d in second["items"]] == ["site/db-1"] and "next-token" not in second
    code, _, none = call("GET", path, query={"status": "FAILED"})
    assert (code, none) == (200, {"items": []})
    code, _, page = call("GET", path, query={"limit": "3"})
    assert [d["device-id"] for d in page["items"]] == DEVICES[:3] and position(page["next-token"]) == "3"


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"next-token": "garbage"}, 400, None),
        ({"next-token": "4"}, 400, None),
        ({"status": "DONE"}, 422, "query.status"),
        ({"limit": "0"}, 422, "query.limit"),
        ({"limit": "101"}, 422, "query.limit"),
    ],
)
def test_bad_queries_are_problems(deployed: Deployment, query: dict[str, str], status: int, field: str | None) -> None:
    task_id, _ = running_task(deployed)
    code, headers, problem = call("GET", f"{RESOURCE}/{task_id}/devices", query=query)
    assert (code, headers["Content-Type"], problem["status"]) == (status, "application/problem+json", status)
    if field:
        assert problem["errors"][0]["field"] == field


def test_a_device_s_output_is_a_redirect_to_a_short_lived_url_of_the_whole_stream(deployed: Deployment) -> None:
    task_id, key = running_task(deployed)
    code, headers, body = call("GET", f"{RESOURCE}/{task_id}/devices/web-1/stdout")
    assert (code, body) == (303, None)
    url = urlsplit(headers["Location"])
    query = parse_qs(url.query)
    assert url.path.endswith(f"/{key}") and deployed.bucket in url.netloc + url.path
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["300"]
    assert query["X-Amz-SignedHeaders"] == ["host"] and query["X-Amz-Signature"]
    # SSM stored no stderr: the stream is empty
    code, headers, body = call("GET", f"{RESOURCE}/{task_id}/devices/web-1/stderr")
    assert (code, body) == (204, None) and "Location" not in headers
    # web-2 is running, 3 has not started: their output is not ready
    for device in ("web-2", "3"):
        code, _, problem = call("GET", f"{RESOURCE}/{task_id}/devices/{device}/stdout")
        assert code == 409 and "its output is ready once it has finished" in problem["detail"], problem


def test_unknown_devices_and_other_callers_tasks_are_not_found(deployed: Deployment) -> None:
    task_id, _ = running_task(deployed)
    code, _, problem = call("GET", f"{RESOURCE}/{task_id}/devices/web-9")
    assert code == 404 and problem["title"] == "Device not found" and "'web-9'" in problem["detail"]
    code, _, problem = call("GET", f"{RESOURCE}/{task_id}/devices/03/stdout")  # 3 is named "3"
    assert code == 404 and "'03'" in problem["detail"]
    for path in ("devices", "devices/web-1", "devices/web-1/stdout", "devices/web-1/stderr"):
        code, _, problem = call("GET", f"{RESOURCE}/{task_id}/{path}", caller="mallory")
        assert (code, problem["title"]) == (404, "Task not found"), path


def test_once_the_task_has_finished_devices_that_never_started_say_so_and_have_no_output(
    deployed: Deployment,
) -> None:
    code, _, task = call("POST", RESOURCE, {"device-ids": ["web-1", 3], "script-url": "scripts/a.sh"})
    code, _, cancelled = call("DELETE", f"{RESOURCE}/{task['id']}")
    assert (code, cancelled["status"]) == (200, "CANCELLED")
    code, _, page = call("GET", f"{RESOURCE}/{task['id']}/devices", query={"status": "NOT_STARTED"})
    assert [(d["device-id"], d["status"], d["reason"]) for d in page["items"]] == [
        ("web-1", "NOT_STARTED", "the device never started"),
        (3, "NOT_STARTED", "the device never started"),
    ]
    code, _, problem = call("GET", f"{RESOURCE}/{task['id']}/devices/3/stderr")
    assert code == 404 and problem["detail"].endswith("ended NOT_STARTED without running: the device never started")


def upload_request(body: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}


def test_an_upload_url_accepts_exactly_the_script_described(deployed: Deployment) -> None:
    script = b"#!/bin/sh\necho uploaded\n"
    digest = hashlib.sha256(script)
    checksum = base64.b64encode(digest.digest()).decode()
    code, _, answer = call("POST", SCRIPTS, upload_request(script))
    assert code == 201, answer
    key = f"scripts/sha256/{digest.hexdigest()}"
    assert answer["script-url"] == f"s3://{deployed.bucket}/{key}"
    upload = answer["upload"]
    assert upload["method"] == "PUT"
    assert upload["headers"] == {"Content-Length": str(len(script)), "x-amz-checksum-sha256": checksum}
    url = urlsplit(upload["url"])
    query = parse_qs(url.query)
    assert url.path.endswith(f"/{key}")
    assert query["X-Amz-SignedHeaders"] == ["content-length;host;x-amz-checksum-sha256"]
    assert query["X-Amz-Expires"] == ["300"] and "Authorization" not in upload["headers"]
    expires_at = datetime.fromisoformat(upload["expiresAt"])
    assert timedelta(seconds=290) < expires_at - datetime.now(UTC) <= timedelta(seconds=300)
    # the bucket holds it once uploaded: nothing more to upload, the same script-url
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key=key, Body=script, ChecksumSHA256=checksum)
    code, _, again = call("POST", SCRIPTS, upload_request(script))
    assert (code, again) == (200, {"script-url": answer["script-url"], "upload": None})
    # a task runs it by that script-url, as it is
    body = {"device-ids": ["web-1"], "script-url": answer["script-url"]}
    code, _, task = call("POST", RESOURCE, body)
    assert code == 202 and task["script-url"] == answer["script-url"]


def test_an_object_at_the_key_that_is_not_the_script_is_replaced(deployed: Deployment) -> None:
    script = b"#!/bin/sh\necho mine\n"
    key = f"scripts/sha256/{hashlib.sha256(script).hexdigest()}"
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key=key, Body=b"#!/bin/sh\necho not mine\n")
    code, _, answer = call("POST", SCRIPTS, upload_request(script))
    assert code == 201 and answer["upload"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sha256": "A" * 64, "size": 10}, "body.sha256"),
        ({"sha256": "a" * 63, "size": 10}, "body.sha256"),
        ({"sha256": "a" * 64, "size": 0}, "body.size"),
        ({"sha256": "a" * 64, "size": 1_048_577}, "body.size"),
        ({"sha256": "a" * 64, "size": "10"}, "body.size"),
        ({"sha256": "a" * 64, "size": 10, "key": "scripts/mine.sh"}, "body.key"),
        ({"size": 10}, "body.sha256"),
    ],
)
def test_bad_upload_requests_are_problems(deployed: Deployment, body: dict[str, Any], field: str) -> None:
    code, headers, problem = call("POST", SCRIPTS, body)
    assert (code, headers["Content-Type"]) == (422, "application/problem+json")
    assert any(error["field"] == field for error in problem["errors"]), problem


@pytest.mark.parametrize(
    ("sample", "status"), [("api-devices.json", 404), ("api-device-stdout.json", 404), ("api-upload-script.json", 201)]
)
def test_the_sample_events_reach_their_routes(deployed: Deployment, sample: str, status: int) -> None:
    """events/ has a sample of each new route, as API Gateway sends it (its task is not there: 404)."""
    event = json.loads((ROOT / "events" / sample).read_text())
    response = function_module("api").handler(event, Context())
    assert response["statusCode"] == status, response
