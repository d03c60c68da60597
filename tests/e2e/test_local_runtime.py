"""The local runtime as `make run` uses it: it stops everything it started."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import RESOURCE, LocalRuntimeProcess

pytestmark = pytest.mark.e2e


def test_sigterm_stops_the_runtime_and_every_running_script() -> None:
    runtime = LocalRuntimeProcess.start()
    try:
        task = runtime.service.submit(**{"device-ids": ["web-1", "web-2"], "script-url": "scripts/slow.sh"})
        deadline = time.monotonic() + 15
        while len(runtime.service.scripts_running()) < 2:
            assert time.monotonic() < deadline, "the scripts did not start"
            time.sleep(0.1)
        assert runtime.service.request("GET", f"{RESOURCE}/{task['id']}").body["status"] == "IN_PROGRESS"
    finally:
        runtime.stop()  # asserts a clean exit and that no script survived
    text = runtime.log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "longrun local runtime stopped" in text


def test_a_commands_end_records_devices_whose_own_events_were_lost() -> None:
    runtime = LocalRuntimeProcess.start("--drop-events", "invocation")
    try:
        service = runtime.service
        task = service.submit(**{"device-ids": ["web-1", "db-1", "nope", 3], "script-url": "scripts/fail-on-db.sh"})
        done = service.wait(task["id"])
        assert done["status"] == "COMPLETE"
        assert done["deviceCounts"] == {**done["deviceCounts"], "SUCCESS": 2, "FAILED": 2, "RUNNING": 0}
        devices = {d["device-id"]: d for d in service.request("GET", f"{RESOURCE}/{task['id']}/result").body["devices"]}
        assert devices["db-1"]["exitCode"] == 3 and devices["web-1"]["stdout"]["head"] == "patched web-1\n"
    finally:
        runtime.stop()
