"""SSM-grade rate control, over HTTP: max-concurrency, max-errors and deadline-seconds."""

from __future__ import annotations

import time
from datetime import datetime
from itertools import pairwise

import pytest

from tests.e2e.conftest import RESOURCE, Service

pytestmark = pytest.mark.e2e


def devices_of(service: Service, task_id: str) -> dict[str | int, dict]:
    return {d["device-id"]: d for d in service.request("GET", f"{RESOURCE}/{task_id}/result").body["devices"]}


def test_max_errors_stops_starting_devices_once_passed(service: Service) -> None:
    # db-1 fails first (one device at a time, in request order); with max-errors 0 nothing starts after it
    ids = ["db-1", "web-1", "web-2", "web-3"]
    task = service.submit(
        **{"device-ids": ids, "script-url": "scripts/fail-on-db.sh", "max-concurrency": 1, "max-errors": 0}
    )
    done = service.wait(task["id"])
    assert done["status"] == "COMPLETE"
    assert done["statusReason"] == "max-errors (0) exceeded: 1 devices failed or timed out, 3 were not started"
    assert done["deviceCounts"]["FAILED"] == 1 and done["deviceCounts"]["NOT_STARTED"] == 3
    devices = devices_of(service, task["id"])
    assert [devices[i]["status"] for i in ids] == ["FAILED", "NOT_STARTED", "NOT_STARTED", "NOT_STARTED"]
    assert done["result"]["failed-on-devices"] == ["db-1"] and done["result"]["success-on-devices"] == []


def test_max_errors_as_a_percentage_tolerates_that_many(service: Service) -> None:
    ids = ["db-1", "web-1", "web-2", "web-3"]  # 25% of 4 is one error allowed: nothing is held back
    task = service.submit(
        **{"device-ids": ids, "script-url": "scripts/fail-on-db.sh", "max-concurrency": 1, "max-errors": "25%"}
    )
    done = service.wait(task["id"])
    assert done["status"] == "COMPLETE" and "statusReason" not in done
    assert done["deviceCounts"]["SUCCESS"] == 3 and done["deviceCounts"]["FAILED"] == 1


def test_max_concurrency_as_a_percentage(service: Service) -> None:
    task = service.submit(**{"device-ids": ["web-1", "web-2", "web-3", "db-1"], "max-concurrency": "25%"})
    service.wait(task["id"])
    devices = devices_of(service, task["id"]).values()
    spans = sorted((datetime.fromisoformat(d["startedAt"]), datetime.fromisoformat(d["endedAt"])) for d in devices)
    assert all(earlier[1] <= later[0] for earlier, later in pairwise(spans))  # 25% of 4: one at a time


def test_the_deadline_stops_the_task_with_its_own_status(service: Service) -> None:
    ids = ["web-1", "web-2", "web-3"]
    task = service.submit(
        **{
            "device-ids": ids,
            "script-url": "scripts/slow.sh",
            "max-concurrency": 1,
            "timeout-seconds": 600,
            "deadline-seconds": 2,
        }
    )
    started = time.monotonic()
    done = service.wait(task["id"], timeout=40)
    assert time.monotonic() - started < 35
    assert done["status"] == "TIMED_OUT", done
    assert done["statusReason"] == "deadline-seconds (2) passed: 1 devices timed out, 2 never started"
    devices = devices_of(service, task["id"])
    assert devices["web-1"]["status"] == "TIMED_OUT"
    assert devices["web-1"]["reason"] == "stopped at the task's deadline-seconds"
    assert {devices["web-2"]["status"], devices["web-3"]["status"]} == {"NOT_STARTED"}
    assert service.scripts_running() == []


def test_progress_gives_an_estimate_once_devices_have_finished(service: Service) -> None:
    ids = ["web-1", "web-2", "web-3", "db-1", 3]
    task = service.submit(**{"device-ids": ids, "script-url": "scripts/hello.sh", "max-concurrency": 1})
    seen: list[dict] = []
    while not seen or seen[-1]["status"] != "COMPLETE":
        reply = service.request("GET", f"{RESOURCE}/{task['id']}")
        seen.append({**reply.body, "retry": reply.headers.get("Retry-After")})
        time.sleep(0.05)
    assert [s["percentage"] for s in seen] == sorted(s["percentage"] for s in seen)  # never goes back
    for state in seen:
        assert sum(state["deviceCounts"].values()) == len(ids)
        if state["status"] != "COMPLETE":
            assert state["retry"] is not None and int(state["retry"]) >= 1
    estimated = [s for s in seen if "estimatedCompletionAt" in s]
    assert all(s["deviceCounts"]["SUCCESS"] >= 3 for s in estimated)
    assert seen[-1]["retry"] is None and "estimatedCompletionAt" not in seen[-1]
