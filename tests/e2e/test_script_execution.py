"""A client's session with the service, over HTTP."""

from __future__ import annotations

import time
from datetime import datetime
from itertools import pairwise

import boto3
import pytest

from tests.e2e.conftest import RESOURCE, Service

pytestmark = pytest.mark.e2e


def test_a_task_where_one_script_fails_completes_with_real_output(service: Service) -> None:
    task = service.submit(**{"device-ids": ["web-1", "db-1", 3], "script-url": "scripts/fail-on-db.sh"})
    done = service.wait(task["id"])
    assert done["status"] == "COMPLETE"
    assert done["percentage"] == 100
    assert done["deviceCounts"]["SUCCESS"] == 2 and done["deviceCounts"]["FAILED"] == 1
    assert sum(done["deviceCounts"].values()) == 3
    assert done["completedAt"] >= done["createdAt"]
    result = done["result"]
    assert sorted(map(str, result["success-on-devices"])) == ["3", "web-1"]
    assert result["failed-on-devices"] == ["db-1"]
    assert result["href"] == f"{service.base_path}{RESOURCE}/{task['id']}/result"
    reply = service.request("GET", result["href"])
    assert reply.status == 200
    devices = {d["device-id"]: d for d in reply.body["devices"]}
    assert list(devices) == ["web-1", "db-1", 3]  # in the request's order, with the request's types
    assert devices["web-1"]["stdout"]["head"] == "patched web-1\n"
    assert devices[3]["stdout"]["head"] == "patched 3\n"
    assert devices["db-1"]["exitCode"] == 3 and devices["db-1"]["status"] == "FAILED"
    assert devices["db-1"]["stderr"]["head"] == "refusing to touch database host db-1\n"
    assert devices["db-1"]["reason"] == "the script exited with code 3"
    for device in devices.values():
        assert datetime.fromisoformat(device["startedAt"]) <= datetime.fromisoformat(device["endedAt"])
    if service.edge:  # the whole stdout is in S3 where the result says
        bucket, _, key = devices["web-1"]["stdout"]["location"].removeprefix("s3://").partition("/")
        assert result["sys-log-location"].startswith(f"s3://{bucket}/")
        s3 = boto3.client(
            "s3",
            endpoint_url=service.edge,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"patched web-1\n"


def test_the_answer_to_a_post_is_immediate_and_pollable(service: Service) -> None:
    reply = service.request("POST", RESOURCE, {"device-ids": ["web-1", "web-2"], "script-url": "scripts/hello.sh"})
    assert reply.status == 202
    assert reply.headers["Location"] == f"{service.base_path}{RESOURCE}/{reply.body['id']}"
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.body["status"] == "SUBMITTED"
    polled = service.request("GET", reply.headers["Location"])
    assert polled.status == 200 and polled.body["id"] == reply.body["id"]
    done = service.wait(reply.body["id"])
    assert "Retry-After" not in service.request("GET", reply.headers["Location"]).headers
    assert done["status"] == "COMPLETE"


def test_cancel_in_the_middle_stops_the_scripts_and_is_idempotent(service: Service) -> None:
    task = service.submit(
        **{"device-ids": ["web-1", "web-2", "web-3"], "script-url": "scripts/slow.sh", "max-concurrency": 2}
    )
    running = service.wait(task["id"], until=("IN_PROGRESS",))
    deadline = time.monotonic() + 10
    while service.process and len(service.scripts_running()) < 2:
        assert time.monotonic() < deadline, "the scripts did not start"
        time.sleep(0.1)
    assert running["status"] == "IN_PROGRESS"
    first = service.request("DELETE", f"{RESOURCE}/{task['id']}")
    assert first.status in (200, 202), first.body
    assert first.body["status"] in ("CANCELLING", "CANCELLED")
    cancelled = service.wait(task["id"], until=("CANCELLED",), timeout=20)
    again = service.request("DELETE", f"{RESOURCE}/{task['id']}")
    third = service.request("DELETE", f"{RESOURCE}/{task['id']}")
    assert again.status == third.status == 200
    assert again.body == third.body == service.request("GET", f"{RESOURCE}/{task['id']}").body
    # two ran (max-concurrency 2) and were stopped; the third never started
    assert (cancelled["deviceCounts"]["CANCELLED"], cancelled["deviceCounts"]["NOT_STARTED"]) == (2, 1)
    assert cancelled["percentage"] == 100
    assert service.scripts_running() == []
    result = service.request("GET", f"{RESOURCE}/{task['id']}/result").body
    assert [d["status"] for d in result["devices"]] == ["CANCELLED", "CANCELLED", "NOT_STARTED"]
    started = [d for d in result["devices"] if d.get("stdout", {}).get("location")]
    assert len(started) >= 2  # the two that ran before the cancel kept their output
    assert all("step 1 of 30" in d["stdout"]["head"] for d in started)


def test_a_finished_task_cannot_be_cancelled(service: Service) -> None:
    task = service.wait(service.submit()["id"])
    reply = service.request("DELETE", f"{RESOURCE}/{task['id']}")
    assert reply.status == 409
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert service.request("GET", f"{RESOURCE}/{task['id']}").body == task


def test_max_concurrency_runs_devices_one_at_a_time(service: Service) -> None:
    task = service.submit(**{"device-ids": ["web-1", "web-2", "web-3"], "max-concurrency": 1})
    service.wait(task["id"])
    devices = service.request("GET", f"{RESOURCE}/{task['id']}/result").body["devices"]
    spans = sorted((datetime.fromisoformat(d["startedAt"]), datetime.fromisoformat(d["endedAt"])) for d in devices)
    assert all(earlier[1] <= later[0] for earlier, later in pairwise(spans))


def test_timeout_and_unknown_devices_end_as_failed_devices(service: Service) -> None:
    task = service.submit(
        **{"device-ids": ["web-1", "no-such-device"], "script-url": "scripts/slow.sh", "timeout-seconds": 1}
    )
    done = service.wait(task["id"], timeout=30)
    assert done["status"] == "COMPLETE"
    assert done["deviceCounts"]["TIMED_OUT"] == 1 and done["deviceCounts"]["FAILED"] == 1
    devices = {d["device-id"]: d for d in service.request("GET", f"{RESOURCE}/{task['id']}/result").body["devices"]}
    assert devices["web-1"]["status"] == "TIMED_OUT"
    assert devices["no-such-device"]["status"] == "FAILED"
    assert devices["no-such-device"]["reason"] == "no SSM managed node is tagged DeviceId=no-such-device"


def test_a_missing_script_fails_the_task_with_the_reason(service: Service) -> None:
    task = service.submit(**{"script-url": "scripts/not-there.sh"})
    done = service.wait(task["id"])
    assert done["status"] == "FAILED"
    assert "scripts/not-there.sh does not exist" in done["statusReason"]
    assert done["deviceCounts"]["NOT_STARTED"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", f"{RESOURCE}/00000000-0000-4000-8000-000000000000", None, 404),
        ("DELETE", f"{RESOURCE}/00000000-0000-4000-8000-000000000000", None, 404),
        ("GET", f"{RESOURCE}/00000000-0000-4000-8000-000000000000/result", None, 404),
        ("POST", RESOURCE, {"device-ids": [], "script-url": "scripts/hello.sh"}, 422),
        ("POST", RESOURCE, {"device-ids": ["a", "a"], "script-url": "scripts/hello.sh"}, 422),
        ("POST", RESOURCE, {"device-ids": ["a"], "script-url": "s3://elsewhere/scripts/hello.sh"}, 422),
        ("POST", RESOURCE, {"device-ids": "web-1", "script-url": "scripts/hello.sh"}, 422),
        ("GET", f"{RESOURCE}?limit=0", None, 422),
    ],
)
def test_problems(service: Service, method: str, path: str, body: object, status: int) -> None:
    before = service.request("GET", f"{RESOURCE}?limit=100").body["items"]
    reply = service.request(method, path, body)
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.body["status"] == status and reply.body["title"]
    assert service.request("GET", f"{RESOURCE}?limit=100").body["items"][: len(before)] == before[: len(before)]
    assert len(service.request("GET", f"{RESOURCE}?limit=100").body["items"]) == len(before)


def test_malformed_and_binary_bodies_are_bad_requests(service: Service) -> None:
    for raw in (b"{nope", b"\xff\xfe\x00binary"):
        reply = service.request("POST", RESOURCE, raw=raw)
        assert reply.status == 400, reply.body
        assert reply.headers["Content-Type"] == "application/problem+json"


def test_result_is_a_conflict_while_running(service: Service) -> None:
    task = service.submit(**{"script-url": "scripts/slow.sh"})
    reply = service.request("GET", f"{RESOURCE}/{task['id']}/result")
    assert reply.status == 409 and reply.body["status"] == 409
    service.request("DELETE", f"{RESOURCE}/{task['id']}")
    service.wait(task["id"], until=("CANCELLED",))


def test_listing_pages_through_the_callers_tasks_newest_first(service: Service) -> None:
    caller = "pager"
    ids = []
    for _ in range(3):
        reply = service.request(
            "POST", RESOURCE, {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}, caller=caller
        )
        ids.append(reply.body["id"])
    seen, path = [], f"{RESOURCE}?limit=2"
    while True:
        page = service.request("GET", path, caller=caller).body
        seen += [item["id"] for item in page["items"]]
        if "next-token" not in page:
            break
        path = f"{RESOURCE}?limit=2&next-token={page['next-token']}"
    assert seen == list(reversed(ids))
    # another caller sees none of them
    assert service.request("GET", f"{RESOURCE}/{ids[0]}").status == 404
    assert not {item["id"] for item in service.request("GET", f"{RESOURCE}?limit=100").body["items"]} & set(ids)
