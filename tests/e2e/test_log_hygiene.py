"""What the logs hold: no script output, and a benign race logged at INFO without a traceback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BUCKET, RESOURCE, Service

pytestmark = pytest.mark.e2e


def _log_lines(service: Service) -> Iterator[tuple[Path, str]]:
    assert service.log is not None
    paths = [service.log, *sorted((service.log.parent / "logs").rglob("*.log"))]
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            yield path, line


def test_no_script_output_reaches_the_logs(service: Service) -> None:
    if service.log is None:
        pytest.skip("the logs of a deployed stack are in CloudWatch")
    marker = f"marker-{uuid.uuid4().hex}"
    script = f"#!/bin/sh\necho 'out {marker}'\necho 'err {marker}' >&2\nexit 4\n".encode()
    service.aws("s3").put_object(Bucket=BUCKET, Key="scripts/hygiene.sh", Body=script)
    task = service.submit(**{"device-ids": ["web-1", "db-1"], "script-url": "scripts/hygiene.sh"})
    assert service.wait(task["id"])["deviceCounts"]["FAILED"] == 2
    result = service.request("GET", f"{RESOURCE}/{task['id']}/result").body
    assert all(marker in device["stdout"]["head"] for device in result["devices"])  # the owner does get it
    leaks = [f"{path.name}: {line[:200]}" for path, line in _log_lines(service) if marker in line]
    assert leaks == []


def test_a_cancel_right_after_the_submit_is_logged_at_info_without_a_traceback(service: Service) -> None:
    if service.log is None:
        pytest.skip("the logs of a deployed stack are in CloudWatch")
    task = service.submit(**{"device-ids": ["web-1", "web-2"], "script-url": "scripts/hello.sh"})
    assert service.request("DELETE", f"{RESOURCE}/{task['id']}").status in (200, 202)
    assert service.wait(task["id"])["status"] == "CANCELLED"
    about = [json.loads(line) for _, line in _log_lines(service) if task["id"] in line and line.startswith("{")]
    assert about, "no log line names the task"
    assert {entry["level"] for entry in about} == {"INFO"}
    assert not [entry for entry in about if "exception" in entry or "Traceback" in json.dumps(entry)]
