"""The devices routes and script uploads over HTTP, as a client uses them: each device's state while a task runs, a
status filter, a device's whole output through the 303 to a presigned S3 URL (fetched with no credentials), and a
script uploaded through a presigned URL without access to the bucket, then run."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import BUCKET, RESOURCE, Reply, Service, sign_as

pytestmark = pytest.mark.e2e
SCRIPTS = "/device-management/scripts"
OTHER_CALLER = "someone-else"
LONG_OUTPUT_LINES = 3_000
LONG_OUTPUT = f"""#!/bin/sh
# Prints far more than the result's 4 KB head: {LONG_OUTPUT_LINES} numbered lines.
i=0
while [ "$i" -lt {LONG_OUTPUT_LINES} ]; do
  i=$((i + 1))
  echo "$DEVICE_ID line $i of {LONG_OUTPUT_LINES}"
done
""".encode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 303 itself is what the test reads


_NOT_FOLLOWING = urllib.request.build_opener(_NoRedirects)


def get(service: Service, path: str, caller: str | None = None, **headers: str) -> Reply:
    """A GET of an API path or of a link the API gave, without following a redirect; signed as ``caller`` if
    given."""
    url = (
        service.origin + path if service.base_path and path.startswith(service.base_path + "/") else service.api + path
    )
    if caller is not None:
        headers = sign_as(caller, "GET", url, None, headers)
    try:
        with _NOT_FOLLOWING.open(urllib.request.Request(url, headers=headers), timeout=30) as reply:
            status, reply_headers, body = reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        status, reply_headers, body = error.code, dict(error.headers), error.read()
    return Reply(status, reply_headers, json.loads(body) if body else None)


def fetch(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A request to a presigned URL, as a browser or curl makes it: no credentials of its own."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def output(service: Service, href: str) -> bytes | None:
    """A device's whole stream through its route: the presigned URL's content, or None for 204 (empty)."""
    reply = get(service, href)
    if reply.status == 204:
        return None
    assert reply.status == 303, (reply.status, reply.body)
    assert reply.headers["Location"].startswith(service.edge or "https://"), reply.headers["Location"]
    status, body = fetch("GET", reply.headers["Location"])
    assert status == 200, body
    return body


def devices(service: Service, task_id: str, query: str = "") -> list[dict[str, Any]]:
    reply = get(service, f"{RESOURCE}/{task_id}/devices{query}")
    assert reply.status == 200, reply.body
    return list(reply.body["items"])


def wait_for(condition: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return found


def test_while_a_task_runs_its_devices_show_running_and_pending_and_their_output_waits(service: Service) -> None:
    task = service.submit(
        **{"device-ids": ["web-1", "web-2", "db-1"], "script-url": "scripts/slow.sh", "max-concurrency": 1}
    )
    task_id = task["id"]
    try:
        states = wait_for(lambda: (found := devices(service, task_id)) and found[0]["status"] == "RUNNING" and found)
        if service.process:  # the script itself has started, so the cancel below stops it (CANCELLED)
            wait_for(lambda: len(service.scripts_running()) >= 1)
        assert [(d["device-id"], d["status"]) for d in states] == [
            ("web-1", "RUNNING"),
            ("web-2", "PENDING"),
            ("db-1", "PENDING"),
        ]
        href = f"{service.base_path}{RESOURCE}/{task_id}/devices"
        assert states[0] == {"device-id": "web-1", "status": "RUNNING", "href": f"{href}/web-1"}
        assert [d["device-id"] for d in devices(service, task_id, "?status=RUNNING")] == ["web-1"]
        assert [d["device-id"] for d in devices(service, task_id, "?status=PENDING")] == ["web-2", "db-1"]
        assert devices(service, task_id, "?status=SUCCESS") == []
        assert get(service, f"{href}/db-1").body == states[2]
        for stream in ("stdout", "stderr"):
            reply = get(service, f"{href}/web-1/{stream}")
            assert reply.status == 409, reply.body
            assert reply.headers["Content-Type"] == "application/problem+json"
            assert "its output is ready once it has finished" in reply.body["detail"]
        # another caller sees none of it
        for path in (href, f"{href}/web-1", f"{href}/web-1/stdout"):
            reply = get(service, path, caller=OTHER_CALLER)
            assert (reply.status, reply.body["title"]) == (404, "Task not found"), path
    finally:
        service.request("DELETE", f"{RESOURCE}/{task_id}")
    service.wait(task_id, until=("CANCELLED",), timeout=30)
    ended = devices(service, task_id)
    assert [d["status"] for d in ended] == ["CANCELLED", "NOT_STARTED", "NOT_STARTED"]
    # web-2 and db-1 were in the command, held back by SSM's rate control, and cancelled before they started
    assert "never started" in ended[1]["reason"] and "stdout" not in ended[1]
    reply = get(service, ended[1]["href"] + "/stdout")
    assert reply.status == 404 and "web-2" in reply.body["detail"] and "never started" in reply.body["detail"]
    if "stdout" in ended[0]:  # it ran until the cancel: whatever it printed by then
        printed = output(service, ended[0]["stdout"])
        assert printed is None or printed.startswith(b"web-1: step 1 of ")


def test_a_device_s_whole_output_is_behind_a_redirect_and_an_empty_stream_is_no_content(service: Service) -> None:
    service.aws("s3").put_object(Bucket=BUCKET, Key="scripts/long-output.sh", Body=LONG_OUTPUT)
    fleet = ["web-1", "db-1", "web-3", 3, "rack:7/b"]  # rack:7/b names no managed node
    failing = service.submit(**{"device-ids": fleet, "script-url": "scripts/fail-on-db.sh"})
    long = service.submit(**{"device-ids": ["web-2"], "script-url": "scripts/long-output.sh"})
    service.wait(failing["id"])
    states = {d["device-id"]: d for d in devices(service, failing["id"])}
    assert list(states) == fleet
    assert {d: s["status"] for d, s in states.items()} == {
        "web-1": "SUCCESS",
        "db-1": "FAILED",
        "web-3": "SUCCESS",
        3: "SUCCESS",
        "rack:7/b": "FAILED",
    }
    failed = devices(service, failing["id"], "?status=FAILED")
    assert failed == [states["db-1"], states["rack:7/b"]]
    assert (failed[0]["exitCode"], failed[0]["reason"]) == (3, "the script exited with code 3")
    assert get(service, f"{RESOURCE}/{failing['id']}/devices/3").body == states[3]
    unknown = states["rack:7/b"]
    assert unknown["href"].endswith("/devices/rack%3A7%2Fb") and "stdout" not in unknown
    assert get(service, unknown["href"]).body == unknown
    reply = get(service, unknown["href"] + "/stdout")
    assert reply.status == 404 and "'rack:7/b'" in reply.body["detail"] and "without running" in reply.body["detail"]
    # each stream as the script wrote it; SSM stores nothing for an empty one: 204
    assert output(service, states["web-1"]["stdout"]) == b"patched web-1\n"
    assert output(service, states["web-3"]["stdout"]) == b"patched web-3\n"
    assert output(service, states["web-1"]["stderr"]) is None
    assert output(service, states["db-1"]["stderr"]) == b"refusing to touch database host db-1\n"
    assert output(service, states["db-1"]["stdout"]) is None
    # only its owner gets a URL
    for stream in ("stdout", "stderr"):
        reply = get(service, states["db-1"][stream], caller=OTHER_CALLER)
        assert reply.status == 404 and "Location" not in reply.headers
    # the whole stream, where the result shows its first 4 KB
    service.wait(long["id"])
    (device,) = devices(service, long["id"])
    expected = "".join(f"web-2 line {i} of {LONG_OUTPUT_LINES}\n" for i in range(1, LONG_OUTPUT_LINES + 1)).encode()
    assert output(service, device["stdout"]) == expected
    head = service.request("GET", f"{RESOURCE}/{long['id']}/result").body["devices"][0]["stdout"]
    assert head["truncated"] and len(expected) > len(head["head"].encode())


def upload(service: Service, script: bytes) -> Reply:
    return service.request("POST", SCRIPTS, {"sha256": hashlib.sha256(script).hexdigest(), "size": len(script)})


def test_a_script_uploaded_through_the_presigned_url_runs(service: Service) -> None:
    marker = uuid.uuid4().hex
    script = f'#!/bin/sh\necho "uploaded {marker} ran on $DEVICE_ID"\n'.encode()
    offer = upload(service, script)
    assert offer.status == 201, offer.body
    script_url = offer.body["script-url"]
    assert script_url == f"s3://{BUCKET}/scripts/sha256/{hashlib.sha256(script).hexdigest()}"
    instructions = offer.body["upload"]
    assert instructions["method"] == "PUT"
    assert set(instructions["headers"]) == {"Content-Length", "x-amz-checksum-sha256"}
    # S3 refuses any other body: another of the same length (its digest differs), or a longer one (its length)
    tampered = script.replace(marker.encode(), marker[::-1].encode())
    for other in (tampered, script + b"echo more\n"):
        headers = instructions["headers"] | {"Content-Length": str(len(other))}
        status, body = fetch("PUT", instructions["url"], other, headers)
        assert 400 <= status < 500, (status, body)
    assert upload(service, script).status == 201  # still nothing there
    status, body = fetch("PUT", instructions["url"], script, instructions["headers"])
    assert status == 200, body
    again = upload(service, script)
    assert (again.status, again.body) == (200, {"script-url": script_url, "upload": None})
    # run it at once, by the script-url as answered
    task = service.submit(**{"device-ids": ["web-1", 3], "script-url": script_url})
    done = service.wait(task["id"])
    assert done["status"] == "COMPLETE" and done["deviceCounts"]["SUCCESS"] == 2, done
    ran = devices(service, task["id"])
    assert [output(service, d["stdout"]) for d in ran] == [
        f"uploaded {marker} ran on web-1\n".encode(),
        f"uploaded {marker} ran on 3\n".encode(),
    ]


def test_bad_upload_requests_are_problems(service: Service) -> None:
    for body in ({"sha256": "F" * 64, "size": 1}, {"sha256": "f" * 64, "size": 2_000_000}, {"size": 1}):
        reply = service.request("POST", SCRIPTS, body)
        assert reply.status == 422 and reply.headers["Content-Type"] == "application/problem+json", reply.body
