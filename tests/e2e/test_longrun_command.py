"""The `longrun` command, run as a user runs it (the installed console script, in a subprocess), against the local
runtime over HTTP and its WebSocket API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import RESOURCE, Service

LONGRUN = str(Path(sys.executable).parent / "longrun")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scripts"


def environment(service: Service, tmp_path: Path, caller: str | None, websocket: bool) -> dict[str, str]:
    """The command's environment: the API (and WebSocket API) from the service; signed as ``caller``, or unsigned
    (the local runtime's default caller, as the tests' own requests are) when None."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "LONGRUN_")) and name not in ("COLUMNS", "LINES")
    }
    env |= {
        "LONGRUN_API_URL": service.api,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "us-east-1",
    }
    if websocket and service.websocket_url:
        env["LONGRUN_WEBSOCKET_URL"] = service.websocket_url
    if caller is not None:
        env |= {"AWS_ACCESS_KEY_ID": caller, "AWS_SECRET_ACCESS_KEY": "local-secret"}
    return env


class Command:
    def __init__(self, service: Service, tmp_path: Path) -> None:
        self.service = service
        self.tmp_path = tmp_path

    def run(
        self, *args: str, caller: str | None = None, websocket: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        env = environment(self.service, self.tmp_path, caller, websocket)
        return subprocess.run([LONGRUN, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, *args: str, websocket: bool = True) -> subprocess.Popen[str]:
        env = environment(self.service, self.tmp_path, None, websocket)
        return subprocess.Popen(
            [LONGRUN, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )


@pytest.fixture
def longrun(service: Service, tmp_path: Path) -> Command:
    return Command(service, tmp_path)


def task_id_of(output: str) -> str:
    return next(word for word in output.split() if word.count("-") == 4 and len(word.rstrip(":")) == 36).rstrip(":")


def wait_until_running(service: Service, task_id: str) -> None:
    service.wait(task_id, until=("IN_PROGRESS",))
    deadline = time.monotonic() + 30
    while service.request("GET", f"{RESOURCE}/{task_id}").body["deviceCounts"].get("RUNNING", 0) == 0:
        assert time.monotonic() < deadline, "no device started"
        time.sleep(0.2)


def test_submit_wait_with_a_failing_device_exits_1_and_shows_its_exit_code(longrun: Command) -> None:
    done = longrun.run("submit", "scripts/fail-on-db.sh", "-d", "web-1,db-1", "--wait")
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stdout.splitlines() if "db-1" in line and "FAILED" in line]
    assert failed, done.stdout
    assert any("exit 3" in line for line in failed)
    assert "refusing to touch database host db-1" in done.stdout  # the first line of its stderr, from the result
    assert "COMPLETE" in done.stdout


def test_submit_wait_where_every_device_succeeds_exits_0(longrun: Command) -> None:
    done = longrun.run("submit", "scripts/hello.sh", "-d", "web-1", "-d", "web-2", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "COMPLETE: 2 of 2 devices succeeded" in done.stdout


def test_watch_of_a_task_cancelled_elsewhere_exits_2(longrun: Command, service: Service) -> None:
    task = service.submit(**{"device-ids": ["web-1", "web-2"], "script-url": "scripts/slow.sh"})
    watching = longrun.start("watch", task["id"], websocket=False)  # by polling
    wait_until_running(service, task["id"])
    assert service.request("DELETE", f"{RESOURCE}/{task['id']}").status in (200, 202)
    out, err = watching.communicate(timeout=90)
    assert watching.returncode == 2, out + err
    assert "CANCELLED" in out


def test_interrupting_watch_without_a_terminal_leaves_the_task_running(longrun: Command, service: Service) -> None:
    task = service.submit(**{"device-ids": ["web-1"], "script-url": "scripts/slow.sh"})
    watching = longrun.start("watch", task["id"])
    wait_until_running(service, task["id"])
    time.sleep(1)  # the command is following by now
    watching.send_signal(signal.SIGINT)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 130, out + err
    assert "left task" in err
    assert service.request("GET", f"{RESOURCE}/{task['id']}").body["status"] == "IN_PROGRESS"
    service.request("DELETE", f"{RESOURCE}/{task['id']}")


def test_json_output_is_the_apis_body(longrun: Command, service: Service) -> None:
    submitted = longrun.run("submit", "scripts/hello.sh", "-d", "web-1", "--json")
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["id"]
    service.wait(task_id)
    shown = longrun.run("status", task_id, "--json")
    assert json.loads(shown.stdout) == service.request("GET", f"{RESOURCE}/{task_id}").body
    result = longrun.run("result", task_id, "--json")
    assert json.loads(result.stdout) == service.request("GET", f"{RESOURCE}/{task_id}/result").body
    listed = longrun.run("list", "--json", "--limit", "5")
    assert task_id in [item["id"] for item in json.loads(listed.stdout)["items"]]


def test_watch_json_prints_one_event_per_line_then_the_final_task(longrun: Command, service: Service) -> None:
    submitted = longrun.run("submit", "scripts/fail-on-db.sh", "-d", "web-1,db-1", "--wait", "--json")
    assert submitted.returncode == 1, submitted.stderr
    lines = [json.loads(line) for line in submitted.stdout.splitlines()]
    task_id = lines[0]["id"]
    events = lines[1:-1]
    assert events and events[-1]["type"] == "script-execution.finished"
    outcomes = {device["device-id"]: device for event in events for device in event.get("devices") or []}
    assert outcomes["db-1"]["exitCode"] == 3
    assert lines[-1] == service.request("GET", f"{RESOURCE}/{task_id}").body


def test_logs_print_a_devices_whole_stdout_and_stderr(longrun: Command) -> None:
    done = longrun.run("submit", "scripts/fail-on-db.sh", "-d", "web-1,db-1", "--wait")
    task_id = task_id_of(done.stdout)
    stdout = longrun.run("logs", task_id, "web-1")
    assert (stdout.returncode, stdout.stdout) == (0, "patched web-1\n")
    stderr = longrun.run("logs", task_id, "db-1", "--stderr")
    assert "refusing to touch database host db-1" in stderr.stdout
    devices = longrun.run("devices", task_id, "--status", "FAILED", "--json")
    assert [device["device-id"] for device in json.loads(devices.stdout)["items"]] == ["db-1"]


def test_a_local_script_is_uploaded_then_run(longrun: Command, tmp_path: Path) -> None:
    script = tmp_path / "greet.sh"
    script.write_text(f'#!/bin/sh\necho "hello from $DEVICE_ID ({tmp_path.name})"\n')
    done = longrun.run("submit", str(script), "-d", "web-2", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scripts/sha256/" in done.stderr
    task_id = task_id_of(done.stdout)
    assert longrun.run("logs", task_id, "web-2").stdout == f"hello from web-2 ({tmp_path.name})\n"


def test_another_callers_task_is_not_found(longrun: Command, service: Service) -> None:
    task = service.submit()
    done = longrun.run("status", task["id"], caller="mallory")
    assert done.returncode == 1
    assert f"no script-execution task {task['id']}" in done.stderr


def test_webhooks_are_added_listed_tested_and_removed(longrun: Command) -> None:
    added = longrun.run("webhooks", "add", "http://127.0.0.1:9/hook", "--json", caller="hook-owner")
    assert added.returncode == 0, added.stderr
    webhook = json.loads(added.stdout)
    assert webhook["secret"].startswith("whsec_")
    listed = longrun.run("webhooks", "list", "--json", caller="hook-owner")
    assert [item["id"] for item in json.loads(listed.stdout)["items"]] == [webhook["id"]]
    assert longrun.run("webhooks", "test", webhook["id"], caller="hook-owner").returncode == 0
    deadline = time.monotonic() + 30  # the ping is queued: its delivery is recorded as it is made
    while True:
        deliveries = longrun.run("webhooks", "deliveries", webhook["id"], "--json", caller="hook-owner")
        assert deliveries.returncode == 0, deliveries.stderr
        items = json.loads(deliveries.stdout)["items"]
        if items or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert items[0]["eventType"] == "webhook.ping"
    assert longrun.run("webhooks", "rm", webhook["id"], caller="hook-owner").returncode == 0
    assert json.loads(longrun.run("webhooks", "list", "--json", caller="hook-owner").stdout)["items"] == []


def test_invalid_input_is_a_usage_error_naming_the_field(longrun: Command) -> None:
    done = longrun.run("submit", "scripts/hello.sh", "-d", "web-1", "--max-concurrency", "0")
    assert done.returncode == 64
    assert "max-concurrency" in done.stderr
