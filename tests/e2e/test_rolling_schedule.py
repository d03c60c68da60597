"""Rolling scheduling, over HTTP: a device starts the moment another ends, never more than max-concurrency at once,
across several SSM commands at once; a straggler holds back no other device; max-errors stays task-wide across the
commands; cancel stops the devices SSM still holds back. Each script notes when it started and ended in a directory
of this machine, so these tests need the local runtime."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import BUCKET, RESOURCE, Service

pytestmark = pytest.mark.e2e


def timed_script(service: Service, directory: Path, name: str, body: str) -> str:
    """A script that notes its start and end under ``directory`` (DEVICE_ID.start, DEVICE_ID.end) around ``body``."""
    if service.process is None:
        pytest.skip("the scripts note their times on this machine: local runtime only")
    text = (
        "#!/bin/sh\n"
        f"echo $(date +%s.%N) > {directory}/$DEVICE_ID.start\n"
        f"{body}\n"
        "code=$?\n"
        f"echo $(date +%s.%N) > {directory}/$DEVICE_ID.end\n"
        "exit $code\n"
    )
    service.aws("s3").put_object(Bucket=BUCKET, Key=f"scripts/{name}", Body=text.encode())
    return f"scripts/{name}"


def spans(directory: Path) -> dict[str, tuple[float, float]]:
    found = {}
    for start in directory.glob("*.start"):
        end = start.with_suffix(".end")
        found[start.stem] = (float(start.read_text()), float(end.read_text()) if end.exists() else float("inf"))
    return found


def most_at_once(runs: dict[str, tuple[float, float]]) -> int:
    moments = sorted([(start, 1) for start, _ in runs.values()] + [(end, -1) for _, end in runs.values()])
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    return peak


def test_a_new_device_starts_while_a_straggler_still_runs(service: Service, tmp_path: Path) -> None:
    devices = [f"device-{n}" for n in range(1, 9)]
    script = timed_script(
        service, tmp_path, "straggler.sh", 'case "$DEVICE_ID" in device-1) sleep 4 ;; *) sleep 0.3 ;; esac'
    )
    task = service.submit(**{"device-ids": devices, "script-url": script, "max-concurrency": 3})
    done = service.wait(task["id"], timeout=60)
    assert done["status"] == "COMPLETE" and done["deviceCounts"]["SUCCESS"] == 8, done
    runs = spans(tmp_path)
    assert set(runs) == set(devices)
    assert most_at_once(runs) <= 3
    straggler = runs["device-1"]
    # with batches as barriers, devices 4..8 would have waited for the straggler; now the two other slots roll
    assert all(straggler[0] < runs[d][0] < straggler[1] for d in devices[3:])


def test_several_commands_at_once_never_run_more_than_max_concurrency(service: Service, tmp_path: Path) -> None:
    devices = [f"device-{n}" for n in range(1, 61)]  # two commands of 30 devices, two of each at once
    script = timed_script(service, tmp_path, "short.sh", "sleep 0.2")
    task = service.submit(**{"device-ids": devices, "script-url": script, "max-concurrency": 4})
    done = service.wait(task["id"], timeout=120)
    assert done["status"] == "COMPLETE" and done["deviceCounts"]["SUCCESS"] == 60, done
    runs = spans(tmp_path)
    assert len(runs) == 60
    assert 2 < most_at_once(runs) <= 4  # both commands ran at once, and never more than 4 devices
    first, second = (sorted(runs[d] for d in devices[i : i + 30]) for i in (0, 30))
    assert first[0][0] < second[-1][1] and second[0][0] < first[-1][1]  # the two commands overlapped


def test_max_errors_stays_task_wide_across_commands(service: Service, tmp_path: Path) -> None:
    devices = [f"device-{n}" for n in range(1, 61)]  # two commands at once: device-1.. and device-31..
    failing = 'case "$DEVICE_ID" in device-1|device-2) exit 3 ;; *) sleep 1 ;; esac'
    script = timed_script(service, tmp_path, "fail-first.sh", failing)
    task = service.submit(**{"device-ids": devices, "script-url": script, "max-concurrency": 4, "max-errors": 1})
    done = service.wait(task["id"], timeout=120)
    counts = done["deviceCounts"]
    assert done["status"] == "COMPLETE" and done["statusReason"].startswith("max-errors (1) exceeded"), done
    assert counts["FAILED"] == 2 and counts["NOT_STARTED"] + counts["SUCCESS"] == 58
    # the first command stopped itself (SSM's MaxErrors); the second's waiting devices were cancelled by longrun
    ran = spans(tmp_path)
    second = [d for d in ran if int(d.split("-")[1]) > 30]
    assert len(second) < 10 and counts["SUCCESS"] == len(ran) - 2, (sorted(ran), counts)
    result = service.devices(task["id"])
    assert {result[f"device-{n}"]["status"] for n in range(45, 61)} == {"NOT_STARTED"}


def test_cancel_stops_the_running_and_the_devices_ssm_still_holds(service: Service, tmp_path: Path) -> None:
    devices = [f"device-{n}" for n in range(1, 7)]
    script = timed_script(service, tmp_path, "long.sh", "sleep 30")
    task = service.submit(**{"device-ids": devices, "script-url": script, "max-concurrency": 2})
    deadline = time.monotonic() + 20
    while len(spans(tmp_path)) < 2:
        assert time.monotonic() < deadline, "the scripts did not start"
        time.sleep(0.1)
    assert service.request("DELETE", f"{RESOURCE}/{task['id']}").status in (200, 202)
    cancelled = service.wait(task["id"], until=("CANCELLED",), timeout=30)
    assert (cancelled["deviceCounts"]["CANCELLED"], cancelled["deviceCounts"]["NOT_STARTED"]) == (2, 4)
    assert len(spans(tmp_path)) == 2 and service.scripts_running() == []


def test_a_deadline_ends_every_script_by_then(service: Service, tmp_path: Path) -> None:
    devices = [f"device-{n}" for n in range(1, 7)]
    script = timed_script(service, tmp_path, "sleepy.sh", "sleep 30")
    started = time.time()
    task = service.submit(**{"device-ids": devices, "script-url": script, "max-concurrency": 2, "deadline-seconds": 3})
    done = service.wait(task["id"], timeout=60)
    assert done["status"] == "TIMED_OUT", done
    assert (done["deviceCounts"]["TIMED_OUT"], done["deviceCounts"]["NOT_STARTED"]) == (2, 4)
    assert len(spans(tmp_path)) == 2 and service.scripts_running() == []
    stopped = [d for d in service.devices(task["id"]).values() if d["status"] == "TIMED_OUT"]
    assert all(datetime.fromisoformat(d["endedAt"]).timestamp() < started + 3 + 2 for d in stopped)  # by then
